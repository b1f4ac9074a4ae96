"""demat's pages and API answer 4xx in French, and every numeric query parameter is bounded.

The real /demat app on a real PostgreSQL; only the caller's identity (Airflow's JWT check) is faked.
"""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from demat_airflow.ui.security import Caller

OP = Caller("operateur", "operateur", "op", "t-op", None)


@pytest.fixture
def client(monkeypatch, demo_settings) -> TestClient:
    from demat_airflow import context
    from demat_airflow.ui import api, app

    async def resolve(request, credentials):
        token = credentials.credentials if credentials else request.cookies.get("_token")
        return OP if token == "t-op" else None

    monkeypatch.setattr(context, "settings", lambda: demo_settings)
    monkeypatch.setattr(app, "resolve_caller", resolve)
    monkeypatch.setattr(api, "resolve_caller", resolve)
    monkeypatch.setattr(app, "login_url", lambda request: "/auth/login?next=x")
    return TestClient(app.create_app(), base_url="http://testserver")


def page(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    assert '<html lang="fr">' in r.text
    for english in ("Not Found", "Method Not Allowed", "Field required", '"detail"', "Input should"):
        assert english not in r.text
    return html.unescape(r.text)


@pytest.mark.parametrize("query", ["page=922337203685477580", "page=0", "page=abc", "par_page=99999999999999999999",
                                   "par_page=-5"])
def test_dossier_list_bounds_its_numbers(client, query):
    text = page(client.get(f"/dossiers?{query}", cookies={"_token": "t-op"}), 422)
    assert "Adresse invalide" in text and ("page" in text or "par_page" in text)


def test_largest_allowed_page_is_an_empty_page_not_an_error(client):
    text = page(client.get("/dossiers?page=100000&par_page=500", cookies={"_token": "t-op"}), 200)
    assert "Dossiers" in text


def test_artefact_and_dashboard_numbers(client):
    page(client.get("/dossiers/x/artefacts/922337203685477580000", cookies={"_token": "t-op"}), 422)
    page(client.get("/tableau-de-bord?jours=1e400", cookies={"_token": "t-op"}), 422)


def test_unknown_page_and_method_are_french(client):
    assert "n'existe pas" in page(client.get("/nulle-part", cookies={"_token": "t-op"}), 404)
    assert "n'existe pas" in page(client.get("/static/absent.css"), 404)
    assert "méthode PUT" in page(client.put("/dossiers", cookies={"_token": "t-op"}), 405)


def test_anonymous_page_still_goes_to_the_login(client):
    r = client.get("/dossiers?page=922337203685477580", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/auth/login")  # nothing about the parameters is told before the login


def test_api_validation_names_the_field_and_the_bound(client):
    r = client.get("/api/v1/dossiers", params={"depuis": "2026-01-01", "limite": "922337203685477580"},
                   headers={"Authorization": "Bearer t-op"})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"erreur", "correction"}
    assert "limite : valeur trop grande (au plus 1000)" in body["erreur"]
    r = client.post("/api/v1/dossiers/x/annulation", content=b"{pas du json",
                    headers={"Authorization": "Bearer t-op", "Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON illisible" in r.json()["erreur"]
    r = client.delete("/api/v1/documents", headers={"Authorization": "Bearer t-op"})
    assert r.status_code == 405 and r.json()["erreur"].startswith("Méthode non autorisée")
    r = client.post("/api/v1/documents", content=b"pas un multipart",
                    headers={"Authorization": "Bearer t-op", "Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 400, r.text  # FastAPI's "There was an error parsing the body", in French
    assert set(r.json()) == {"erreur", "correction"} and "illisible" in r.json()["erreur"]


@pytest.mark.parametrize("path", ["/demat/api/v1/collectivites/a%0Ab%0Dc/retours-helios",
                                  "/demat/api/v1/collectivites/a%C2%85b/retours-helios/1",
                                  "/demat/api/v1/dossiers/a%0Ab", "/demat/dossiers/a%E2%80%A8b"])
def test_demat_paths_with_control_characters_are_french_400(client, path):
    """Found by schemathesis in CI: a slug holding a newline matched no route ("/demat/{path}" stops at
    a newline) and got Airflow's English 404. The root middleware answers first, in the route's shape."""
    from demat_airflow.ui.limits import PathGuard

    guarded = TestClient(PathGuard(client.app), base_url="http://testserver")
    r = guarded.get(path, headers={"Authorization": "Bearer t-op"})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    if "/api/" in path:
        assert {"erreur", "correction"} <= set(r.json()), r.text[:300]
    else:
        assert "caractère de contrôle" in page(r, 400)
    assert guarded.get("/demat/api/v1/dossiers/a-b").status_code != 400  # a normal address passes through
