"""The actions on a dossier, on the running platform (real scheduler, simulators, Airflow's REST API).

A collectivité's software submits three documents through the business API:
- a PES whose run dies while it waits at the parapheur: the operator sees "relancer", relaunches it
  (Airflow clears the parapheur task), the official approves and the PES is transmitted;
- a PES refused at validation (wrong SIRET): the corrected file goes through POST .../resubmit, becomes
  version 2 through the inbox and is validated; the identical file is refused;
- an acte that receives a demande de pièces complémentaires (simulator marker): the agent answers it
  through POST .../reponse, the 3-4 leaves at once and the préfecture acknowledges it (3-5); then the
  agent cancels the transmission from the dossier page (cookie + CSRF form) and the 6-2 marks it annulé.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

import pytest
import requests

from flows.config import load_config
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from simulators.signer import APPROVE, AirflowClient

pytestmark = pytest.mark.e2e
# seconds for the whole scenario, platform start excluded (two pipelines, one relaunch, letters and answers)
BUDGET = float(os.environ.get("DEMAT_E2E_ACTIONS_BUDGET", "480"))


class Vendor:
    """A collectivité's software, with an Airflow token."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url, self.username = base_url, username
        r = requests.post(f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=20)
        r.raise_for_status()
        self.token = r.json()["access_token"]
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {self.token}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/demat/api/v1{path}"

    def submit(self, coll: str, flux: str, name: str, data: bytes) -> str:
        r = self.s.post(self.url("/documents"), data={"collectivite": coll, "flux": flux},
                        files={"fichier": (name, data, "application/octet-stream")}, timeout=60)
        assert r.status_code == 202, r.text
        return r.json()["dossier_id"]

    def actions(self, dossier_id: str) -> dict:
        r = self.s.get(self.url(f"/dossiers/{dossier_id}/actions"), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, dossier_id: str, action: str, **kw) -> requests.Response:
        return self.s.post(self.url(f"/dossiers/{dossier_id}/{action}"), timeout=60, **kw)


def _error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"erreur", "correction"} and body["erreur"] and body["correction"], body
    return body


def _dossier(platform, dossier_id: str):
    with session_scope(platform.database_url) as s:
        try:
            d = service.get(s, dossier_id)
        except LookupError:
            return None
        return d.state, [(e.event, e.actor, e.state_to) for e in d.journal], d.previous_id, d.version


def test_actions_through_the_api_and_the_page(platform):
    from flows.actes.generate import generate_acte_zip
    from flows.actes.pdf import minimal_pdf
    from flows.helios.generate import generate_pes

    deadline = time.monotonic() + BUDGET
    config = load_config(platform.state / "config.yaml")
    coll, other = config.collectivite("saint-sever"), config.collectivite("cc-chalosse-tursan")
    pw = platform.secrets["passwords"]
    agent = Vendor(platform.base_url, "agent.saintsever", pw["agent.saintsever"])
    operator = Vendor(platform.base_url, "operateur", pw["operateur"])
    outsider = Vendor(platform.base_url, "agent.chalosse", pw["agent.chalosse"])
    maire = AirflowClient(platform.base_url, "maire.saintsever", pw["maire.saintsever"])
    admin = AirflowClient(platform.base_url, "admin", pw["admin"])
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    helios = dict(idpost=coll.helios.idpost, codcol=coll.helios.codcol, codbud=coll.helios.codbud, n_bordereaux=1)

    stuck_id = agent.submit(coll.slug, "helios", f"pes-bloque-{stamp}.xml",
                            generate_pes(siret=coll.siret, nomfic=f"PES_BLOQ_{stamp}", seed=7, **helios))
    bad = generate_pes(siret=other.siret, nomfic=f"PES_CORR_{stamp}", seed=8, **helios)
    refused_id = agent.submit(coll.slug, "helios", f"pes-faux-{stamp}.xml", bad)
    acte_id = agent.submit(coll.slug, "actes", f"acte-actions-{stamp}.zip", generate_acte_zip(
        collectivite=coll, numero=f"ACT{stamp[:9]}", nature="DE", matiere="5.2",
        objet="Délibération à compléter [simulateur:3-1]"))
    stuck_run = f"dossier__{stuck_id}"

    def approve(skip: str | None = None):
        for detail in maire.pending_requests():
            if detail["task_instance"]["dag_run_id"] != skip:
                maire.respond(detail, APPROVE)

    # ---- 1. the PES whose run dies at the parapheur, relaunched by the operator
    def tasks() -> dict:
        r = requests.get(f"{platform.base_url}/api/v2/dags/demat_pes/dagRuns/{stuck_run}/taskInstances",
                         headers={"Authorization": f"Bearer {admin.token()}"}, timeout=20)
        return {t["task_id"]: t["state"] for t in r.json().get("task_instances", [])} if r.status_code == 200 else {}

    platform.wait(lambda: any(t.startswith("parapheur") and st in ("awaiting_input", "deferred") for t, st in tasks().items()),
                  deadline, "the PES parked at the parapheur", tick=lambda: approve(skip=stuck_run),
                  explain=lambda: f"tasks: {tasks()}\ndossier: {_dossier(platform, stuck_id)}")
    r = admin.patch(f"/dags/demat_pes/dagRuns/{stuck_run}", {"state": "failed"})  # the run dies
    assert r.status_code == 200, r.text
    assert _dossier(platform, stuck_id)[0] == "au_parapheur"
    assert agent.actions(stuck_id)["actions"] == []
    listed = operator.actions(stuck_id)
    assert [a["code"] for a in listed["actions"]] == ["relancer"], listed
    assert "opérateur" in _error(agent.post(stuck_id, "retry"), 403)["erreur"]
    r = operator.post(stuck_id, "retry")
    assert r.status_code == 202, r.text
    assert r.json()["etape"] == "parapheur" and "parapheur" in r.json()["message"]
    assert "en cours" in _error(operator.post(stuck_id, "retry"), 409)["erreur"]  # the run lives again

    # ---- 2. the refused PES and its corrected version
    platform.wait(lambda: (_dossier(platform, refused_id) or ("",))[0] == "refuse_validation", deadline,
                  "the wrong PES refused at validation", tick=approve)
    assert [a["code"] for a in agent.actions(refused_id)["actions"]] == ["resoumettre"]
    _error(outsider.post(refused_id, "resubmit", files={"fichier": ("x.xml", b"<x/>")}), 404)
    same = agent.post(refused_id, "resubmit", files={"fichier": ("pes-faux-encore.xml", bad)})
    assert "identique" in _error(same, 409)["erreur"]
    corrected = generate_pes(siret=coll.siret, nomfic=f"PES_CORR_{stamp}", seed=8, **helios)
    r = agent.post(refused_id, "resubmit", files={"fichier": (f"pes-corrige-{stamp}.xml", corrected)})
    assert r.status_code == 202, r.text
    new_id = r.json()["nouveau_dossier_id"]
    again = agent.post(refused_id, "resubmit", files={"fichier": (f"pes-corrige-{stamp}.xml", corrected)})
    assert again.status_code == 202 and again.json()["statut"] == "deja_enregistre"

    def linked():
        d = _dossier(platform, new_id)
        return d is not None and d[0] not in ("recu",) and d

    state, journal, previous, version = platform.wait(linked, deadline, "the corrected PES ingested and validated",
                                                      tick=approve)
    assert previous == refused_id and version == 2 and state != "refuse_validation", journal
    assert ("nouvelle_version", "agent.saintsever", None) in journal
    assert [e for e, _, _ in _dossier(platform, refused_id)[1]][-2:] == ["resoumission", "version_suivante"]

    # the relaunched PES went through
    platform.wait(lambda: _dossier(platform, stuck_id)[0] in ("transmis", "acquitte", "depose_sae", "archive"), deadline,
                  "the relaunched PES transmitted", tick=approve)
    assert ("relance", "operateur", None) in _dossier(platform, stuck_id)[1]

    # ---- 3. the acte: answer the demande de pièces through the API
    platform.wait(lambda: any(e == "DemandePieceComplementaire" for e, _, _ in _dossier(platform, acte_id)[1]), deadline,
                  "ARActe then the demande de pièces complémentaires", tick=approve)
    listed = agent.actions(acte_id)
    assert {a["code"] for a in listed["actions"]} == {"annuler", "repondre", "publier"}, listed  # acknowledged: publishable
    assert [c["code"] for c in listed["courriers"][0]["reponses"]] == ["3-4", "3-3", "3-2"]
    assert "refusé ou rejeté" in _error(agent.post(acte_id, "resubmit", files={"fichier": ("a.zip", b"PK")}),
                                        409)["erreur"]
    pieces = minimal_pdf("Plan de financement", f"Dossier {acte_id}")
    r = agent.post(acte_id, "reponse", data={"reponse": "3-4", "motif": "Plan signé joint"},
                   files={"fichiers": ("plan-financement.pdf", pieces, "application/pdf")})
    assert r.status_code == 202, r.text
    platform.wait(lambda: "ARPieceComplementaire" in [e for e, _, _ in _dossier(platform, acte_id)[1]], deadline,
                  "3-4 sent at once and acknowledged (3-5)")
    events = _dossier(platform, acte_id)[1]
    assert ("reponse_agent", "agent.saintsever", None) in events and ("envoi_3-4", "agent.saintsever", None) in events
    runs = admin.get("/dags/demat_actes_answers/dagRuns", limit=100)["dag_runs"]
    assert any(r["dag_run_id"].startswith("demat_action__") for r in runs), "no immediate send was triggered"

    # ---- 4. the annulation from the dossier page, as the browser form sends it
    page = requests.Session()
    page.cookies.set("_token", agent.token)
    html = page.get(f"{platform.base_url}/demat/dossiers/{acte_id}", timeout=30).text
    assert 'id="form-annuler"' in html and 'id="form-resoumettre"' not in html
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)
    forged = page.post(f"{platform.base_url}/demat/dossiers/{acte_id}/annuler", data={"motif": "x"},
                       allow_redirects=False, timeout=30)
    assert forged.status_code == 403
    r = page.post(f"{platform.base_url}/demat/dossiers/{acte_id}/annuler",
                  data={"csrf": token, "motif": "Acte retiré par le conseil"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "message=" in r.headers["location"], r.headers.get("location")
    platform.wait(lambda: _dossier(platform, acte_id)[0] == "annule", deadline, "6-1 sent, 6-2 received, dossier annulé")
    assert ("annulation_demandee", "agent.saintsever", None) in _dossier(platform, acte_id)[1]
    assert "annulé" in page.get(f"{platform.base_url}/demat/dossiers/{acte_id}", timeout=30).text.lower()
    with session_scope(platform.database_url) as s:
        assert verify_chain(s).ok
