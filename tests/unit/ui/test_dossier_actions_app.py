"""The dossier actions through the real /demat FastAPI app (pages and business API), on a real PostgreSQL.

Airflow itself is not started: the caller's identity (Airflow's JWT check) and the Airflow REST
calls of a retry are replaced by fakes; everything else (routes, forms, CSRF, templates, OpenAPI,
the domain, the inbox) is the real code.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from fastapi.testclient import TestClient

from flows.actes import messages as M
from flows.actes.pdf import minimal_pdf
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline.prefecture import handle_prefecture_reply
from flows.settings import Settings

COLL = "saint-sever"
IDACTE = "040-214002933-20261120-DEL42-DE"
PDF = minimal_pdf("Réponse de la commune", "Pièces")


@pytest.fixture
def settings(demo_settings) -> Settings:
    return demo_settings


@pytest.fixture
def airflow(monkeypatch, settings):
    """Fakes for what Airflow does: identity from a token, the run's state, the relaunch, "send now"."""
    from demat_airflow import context
    from demat_airflow.ui import api, app, hitl, runs, security
    from demat_airflow.ui.security import Caller

    users = {
        "t-agent": Caller("agent.saintsever", "agent.saintsever", "viewer", "t-agent", frozenset({COLL})),
        "t-maire": Caller("maire.saintsever", "maire.saintsever", "user", "t-maire", frozenset({COLL})),
        "t-autre": Caller("agent.chalosse", "agent.chalosse", "viewer", "t-autre", frozenset({"cc-chalosse-tursan"})),
        "t-op": Caller("operateur", "operateur", "op", "t-op", None),
    }

    async def resolve(request, credentials):
        token = credentials.credentials if credentials else request.cookies.get("_token")
        return users.get(token or "")

    calls: dict[str, list] = {"send_now": [], "relaunch": []}
    fake = {"run_state": "failed", "relaunch_error": None}

    def relaunch(token, dag_id, run_id, dossier_id, step, *, actor):
        if fake["relaunch_error"]:
            raise hitl.AirflowApiError(fake["relaunch_error"])
        calls["relaunch"].append((token, dag_id, run_id, dossier_id, step, actor))
        return "tâche relancée"

    monkeypatch.setattr(context, "settings", lambda: settings)
    monkeypatch.setattr(app, "resolve_caller", resolve)
    monkeypatch.setattr(api, "resolve_caller", resolve)
    monkeypatch.setattr(runs, "run_state", lambda token, dag_id, run_id: fake["run_state"])
    monkeypatch.setattr(runs, "relaunch", relaunch)
    monkeypatch.setattr(runs, "send_now", lambda actor: calls["send_now"].append(actor) or True)
    monkeypatch.setenv("DEMAT_CSRF_SECRET", "secret-de-test")
    security._csrf_key.cache_clear()
    yield calls, fake
    security._csrf_key.cache_clear()


@pytest.fixture
def client(airflow) -> TestClient:
    from demat_airflow.ui.app import create_app

    return TestClient(create_app(), base_url="http://testserver")


def make(settings: Settings, *, flow: str, state: str, sha: str, path: tuple[str, ...] = ()) -> str:
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=COLL, flow=flow, original_name="acte.zip" if flow == "actes" else "pes.xml",
                           sha256=sha * 64, size=10, doc_type="deliberation" if flow == "actes" else "pes")
        d.run_id = f"dossier__{d.id}"
        for target in (*path, state):
            if d.state != target:
                service.transition(s, d, target, message=f"test → {target}")
        if flow == "actes":
            d.idacte = IDACTE
        return d.id


ACTE_PATH = ("valide", "au_parapheur", "signe", "transmis")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def page(client: TestClient, token: str, dossier_id: str) -> str:
    r = client.get(f"/dossiers/{dossier_id}", cookies={"_token": token})
    assert r.status_code == 200, r.text
    return r.text


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def browser_multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """multipart/form-data exactly as a browser writes it (an empty file input has filename="")."""
    boundary = "----demat-test-boundary"
    out = b""
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    for name, filename, data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def error(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"erreur", "correction"} and body["erreur"] and body["correction"], body
    return body


# --------------------------------------------------------------------------------------------- pages
def test_page_shows_only_the_allowed_actions(client, settings):
    refused = make(settings, flow="helios", state="refuse_validation", sha="1")
    html = page(client, "t-agent", refused)
    assert 'id="form-resoumettre"' in html and 'enctype="multipart/form-data"' in html
    assert "form-annuler" not in html and "form-relancer" not in html and "form-repondre" not in html
    assert "Aucune action possible" in page(client, "t-maire", refused)
    acte = make(settings, flow="actes", state="acquitte", sha="2", path=ACTE_PATH)
    html = page(client, "t-agent", acte)
    assert 'id="form-annuler"' in html and "form-resoumettre" not in html
    r = client.get(f"/dossiers/{acte}", cookies={"_token": "t-autre"})
    assert r.status_code == 404 and "introuvable" in r.text


def test_resubmit_form_is_csrf_protected_and_lands_in_the_inbox(client, settings):
    refused = make(settings, flow="helios", state="refuse_validation", sha="3")
    token = csrf_of(page(client, "t-agent", refused))
    files = {"fichier": ("pes-corrige.xml", b"<PES_Aller>v2</PES_Aller>", "application/xml")}
    folder = settings.inbox_root / COLL / "helios"
    # no token, a forged token, another site's Origin: refused, nothing written
    for data, headers in (({}, {}), ({"csrf": "0" * 64}, {}), ({"csrf": token}, {"Origin": "http://evil.example"})):
        r = client.post(f"/dossiers/{refused}/resoumettre", data=data, files=files, headers=headers,
                        cookies={"_token": "t-agent"})
        assert r.status_code == 403 and "Formulaire refusé" in r.text
    assert not [p for p in folder.iterdir() if p.is_file()]
    r = client.post(f"/dossiers/{refused}/resoumettre", data={"csrf": token}, files=files,
                    headers={"Origin": "http://testserver"}, cookies={"_token": "t-agent"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/demat/dossiers/{refused}?message=")
    assert (folder / "pes-corrige.xml").read_bytes() == b"<PES_Aller>v2</PES_Aller>"
    html = page(client, "t-agent", refused)
    assert "Version corrigée" in html and "pes-corrige.xml" in html and "form-resoumettre" not in html
    # the official may not resubmit: the page says why, nothing is written
    other = make(settings, flow="helios", state="refuse_validation", sha="4")
    from demat_airflow.ui.security import Caller, csrf_token

    maire_csrf = csrf_token(Caller("maire.saintsever", "maire.saintsever", "user", "t-maire", frozenset({COLL})))
    r = client.post(f"/dossiers/{other}/resoumettre", data={"csrf": maire_csrf},
                    files={"fichier": ("x.xml", b"<x/>", "application/xml")}, cookies={"_token": "t-maire"},
                    follow_redirects=False)
    assert r.status_code == 303 and "erreur=" in r.headers["location"]
    follow = client.get(r.headers["location"].removeprefix("/demat"), cookies={"_token": "t-maire"})
    assert "réservé à" in follow.text and 'id="erreur"' in follow.text


def test_annul_and_answer_forms(client, settings, airflow):
    calls, _ = airflow
    acte = make(settings, flow="actes", state="acquitte", sha="5", path=ACTE_PATH)
    name, data = M.build_response_archive([M.build_courrier("3-1", IDACTE, date=date(2026, 11, 24))], 1,
                                          "214002933", "040", arrondissement=2)
    with session_scope(settings.database_url) as s:
        handle_prefecture_reply(s, ArtefactStore(settings.store_root), name, data, inbox_root=settings.inbox_root)
    html = page(client, "t-agent", acte)
    assert 'id="form-repondre"' in html and 'value="3-4|2026-11-24"' in html
    token = csrf_of(html)
    # as a browser sends it, with a second, empty file input (filename="")
    body, ctype = browser_multipart({"csrf": token, "reponse": "3-4|2026-11-24"},
                                    [("fichiers", "plan.pdf", PDF), ("fichiers", "", b"")])
    r = client.post(f"/dossiers/{acte}/repondre", content=body, headers={"Content-Type": ctype},
                    cookies={"_token": "t-agent"}, follow_redirects=False)
    assert r.status_code == 303 and "message=" in r.headers["location"], r.text
    assert calls["send_now"] == ["agent.saintsever"]
    r = client.post(f"/dossiers/{acte}/annuler", data={"csrf": token, "motif": ""}, cookies={"_token": "t-agent"},
                    follow_redirects=False)
    assert "erreur=" in r.headers["location"]
    r = client.post(f"/dossiers/{acte}/annuler", data={"csrf": token, "motif": "Acte retiré"},
                    cookies={"_token": "t-agent"}, follow_redirects=False)
    assert "message=" in r.headers["location"]
    html = page(client, "t-agent", acte)
    assert 'id="annulation"' in html and "form-annuler" not in html
    assert "annulation_demandee" not in html and "Acte retiré" in html  # the journal shows the request


def test_parapheur_decision_needs_the_form_token(client, monkeypatch):
    from demat_airflow.ui import hitl

    monkeypatch.setattr(hitl, "pending_for", lambda *a: pytest.fail("nothing may reach Airflow"))
    r = client.post("/parapheur/decision", data={"action": "approuver", "selection": ["a|b|c|-1"]},
                    cookies={"_token": "t-maire"}, follow_redirects=False)
    assert r.status_code == 303 and "Formulaire+refus" in r.headers["location"]


# --------------------------------------------------------------------------------------------- API
def test_api_resubmit(client, settings):
    refused = make(settings, flow="helios", state="rejete_parapheur", sha="6", path=("valide", "au_parapheur"))
    listed = client.get(f"/api/v1/dossiers/{refused}/actions", headers=bearer("t-agent")).json()
    assert [a["code"] for a in listed["actions"]] == ["resoumettre"]
    assert listed["actions"][0]["chemin"] == f"/dossiers/{refused}/resubmit"
    url = f"/api/v1/dossiers/{refused}/resubmit"
    good = {"fichier": ("pes-v2.xml", b"<PES_Aller>v2</PES_Aller>", "application/xml")}
    # the browser's cookie alone may not change a dossier
    error(client.post(url, files=good, cookies={"_token": "t-agent"}), 401)
    error(client.post(url, files=good, headers=bearer("t-autre")), 404)
    assert "réservé" in error(client.post(url, files=good, headers=bearer("t-maire")), 403)["erreur"]
    assert "fichier" in error(client.post(url, files={"fichier": ("scan.pdf", b"%PDF", "application/pdf")},
                                          headers=bearer("t-agent")), 422)["erreur"]
    assert "fichier" in error(client.post(url, headers=bearer("t-agent")), 422)["erreur"]
    r = client.post(url, files=good, headers=bearer("t-agent"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["statut"] == "enregistre" and body["nouveau_dossier_id"].startswith("saint-sever-helios-")
    assert body["suivi"].endswith(f"/dossiers/{body['nouveau_dossier_id']}")
    again = client.post(url, files=good, headers=bearer("t-agent")).json()
    assert again["statut"] == "deja_enregistre" and again["nouveau_dossier_id"] == body["nouveau_dossier_id"]
    other = client.post(url, files={"fichier": ("v3.xml", b"<v3/>", "application/xml")}, headers=bearer("t-agent"))
    assert "déjà une version corrigée" in error(other, 409)["erreur"]


def test_api_identical_file_and_wrong_state_are_409_in_french(client, settings):
    refused = make(settings, flow="helios", state="refuse_validation", sha="7")
    with session_scope(settings.database_url) as s:
        import hashlib

        service.get(s, refused).sha256 = hashlib.sha256(b"<pareil/>").hexdigest()
    r = client.post(f"/api/v1/dossiers/{refused}/resubmit", files={"fichier": ("a.xml", b"<pareil/>", "text/xml")},
                    headers=bearer("t-agent"))
    assert "identique" in error(r, 409)["erreur"]
    ok = make(settings, flow="helios", state="valide", sha="8")
    r = client.post(f"/api/v1/dossiers/{ok}/resubmit", files={"fichier": ("a.xml", b"<autre/>", "text/xml")},
                    headers=bearer("t-agent"))
    assert "Validé" in error(r, 409)["erreur"]
    r = client.post(f"/api/v1/dossiers/{ok}/annulation", json={"motif": "m"}, headers=bearer("t-agent"))
    assert "n'est pas un acte" in error(r, 409)["erreur"]


def test_api_annulation_and_reponse(client, settings, airflow):
    calls, _ = airflow
    acte = make(settings, flow="actes", state="transmis", sha="9", path=ACTE_PATH)
    url = f"/api/v1/dossiers/{acte}/annulation"
    assert "motif" in error(client.post(url, json={}, headers=bearer("t-agent")), 422)["erreur"]
    assert "JSON" in error(client.post(url, content=b"{pas du json", headers={**bearer("t-agent"),
                                                                             "Content-Type": "application/json"}),
                           422)["erreur"]
    r = client.post(url, json={"motif": "Erreur de destinataire"}, headers=bearer("t-maire"))
    assert r.status_code == 202 and r.json()["statut"] == "enregistre" and r.json()["envoi"].endswith(".tar.gz")
    assert calls["send_now"] == ["maire.saintsever"]
    again = client.post(url, json={"motif": "x"}, headers=bearer("t-agent"))
    assert again.json()["statut"] == "deja_enregistre" and calls["send_now"] == ["maire.saintsever"]
    r = client.post(f"/api/v1/dossiers/{acte}/reponse", files={"fichiers": ("a.pdf", PDF, "application/pdf")},
                    headers=bearer("t-agent"))
    assert "aucun courrier" in error(r, 409)["erreur"]
    name, data = M.build_response_archive([M.build_courrier("4-1", IDACTE, date=date(2026, 11, 24))], 1,
                                          "214002933", "040", arrondissement=2)
    with session_scope(settings.database_url) as s:
        handle_prefecture_reply(s, ArtefactStore(settings.store_root), name, data, inbox_root=settings.inbox_root)
    listed = client.get(f"/api/v1/dossiers/{acte}/actions", headers=bearer("t-agent")).json()
    assert [c["code"] for c in listed["courriers"][0]["reponses"]] == ["4-4", "4-3", "4-2"]
    r = client.post(f"/api/v1/dossiers/{acte}/reponse", data={"reponse": "3-4"},
                    files={"fichiers": ("a.pdf", PDF, "application/pdf")}, headers=bearer("t-agent"))
    assert error(r, 422)["erreur"].startswith("reponse :")
    r = client.post(f"/api/v1/dossiers/{acte}/reponse", data={"reponse": "4-4", "date_courrier": "24/11/2026"},
                    files={"fichiers": ("a.pdf", PDF, "application/pdf")}, headers=bearer("t-agent"))
    assert error(r, 422)["erreur"].startswith("date_courrier :")
    r = client.post(f"/api/v1/dossiers/{acte}/reponse", data={"reponse": "4-4", "motif": "Observations levées"},
                    files={"fichiers": ("reponse.pdf", PDF, "application/pdf")}, headers=bearer("t-agent"))
    assert r.status_code == 202, r.text
    assert "lettre d'observations" in r.json()["message"]


def test_api_retry(client, settings, airflow):
    calls, fake = airflow
    broken = make(settings, flow="helios", state="erreur", sha="a", path=("valide", "au_parapheur", "signe"))
    url = f"/api/v1/dossiers/{broken}/retry"
    assert "opérateur" in error(client.post(url, headers=bearer("t-agent")), 403)["erreur"]
    r = client.post(url, headers=bearer("t-op"))
    assert r.status_code == 202, r.text
    assert r.json()["etape"] == "transmission" and r.json()["etat"] == "signe"
    assert calls["relaunch"] == [("t-op", "demat_pes", f"dossier__{broken}", broken, "transmission", "operateur")]
    fake["run_state"] = "running"
    assert "en cours" in error(client.post(url, headers=bearer("t-op")), 409)["erreur"]
    fake["run_state"], fake["relaunch_error"] = "failed", "API d'Airflow injoignable"
    body = error(client.post(url, headers=bearer("t-op")), 503)
    assert "Signé" in body["erreur"] and "injoignable" in body["erreur"]


def test_openapi_documents_the_actions(client):
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for action in ("resubmit", "annulation", "reponse", "retry"):
        op = paths[f"/dossiers/{{dossier_id}}/{action}"]["post"]
        assert {"202", "404", "409", "422"} <= set(op["responses"]), action
        assert op["summary"]
    assert "get" in paths["/dossiers/{dossier_id}/actions"]


def test_body_limit_refuses_before_reading():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from demat_airflow.ui.dossier_actions import BodyLimit

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    app = BodyLimit(Starlette(routes=[Route("/api/v1/x", echo, methods=["POST"]), Route("/x", echo, methods=["POST"])]),
                    max_bytes=100)
    c = TestClient(app)
    assert c.post("/api/v1/x", content=b"a" * 50).text == "50"
    r = c.post("/api/v1/x", content=b"a" * 200)
    assert r.status_code == 413 and "trop volumineux" in r.json()["erreur"]
    r = c.post("/x", content=b"a" * 200)
    assert r.status_code == 413 and "trop volumineux" in r.text


def test_every_dossier_action_has_an_api_path():
    """The API lists each offered action with its path: an action added to flows.pipeline.actions
    without one made GET /dossiers/{id} answer 500 (KeyError 'publier')."""
    from demat_airflow.ui.api import ACTION_PATHS
    from flows.pipeline.actions import SPECS

    assert set(SPECS) <= set(ACTION_PATHS)
