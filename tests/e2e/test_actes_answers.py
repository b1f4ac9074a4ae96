"""End to end, the préfecture's answers: an acte gets its ARActe, then a demande de pièces
complémentaires (forced by the simulator's "[simulateur:3-1]" scenario marker in the Objet); the
agent drops the pieces into the reply folder; demat transmits them (3-4) and the préfecture's
acknowledgment (3-5) comes back, all in the dossier journal. Then the agent cancels the acte's
transmission (6-1) through the annulation DAG and the ARAnnulation (6-2) marks it "annulé"."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import pytest
import requests

from flows.config import load_config
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.pipeline import answers
from simulators.signer import AirflowClient, answer_all

pytestmark = pytest.mark.e2e
# seconds for the whole scenario, platform start excluded: about 2.5 min on an idle machine (acte
# pipeline, 3-1 after 5 s, answer, 3-5, 6-1, 6-2); the margin is for a loaded CI runner
BUDGET = float(os.environ.get("DEMAT_E2E_ANSWERS_BUDGET", "360"))


def _trigger(platform, dag_id: str, conf: dict | None = None) -> str:
    admin = AirflowClient(platform.base_url, "admin", platform.secrets["passwords"]["admin"])
    r = requests.post(f"{platform.base_url}/api/v2/dags/{dag_id}/dagRuns",
                      json={"logical_date": None, "conf": conf or {}},
                      headers={"Authorization": f"Bearer {admin.token()}"}, timeout=20)
    assert r.status_code in (200, 201), r.text
    return r.json()["dag_run_id"]


def _events(platform, dossier_id: str) -> list[tuple[str, str | None, str]]:
    with session_scope(platform.database_url) as session:
        d = service.get(session, dossier_id)
        return [(e.event, e.state_to, e.message) for e in d.journal]


def test_demande_de_pieces_answered_and_acknowledged_then_annulation(platform):
    from flows.actes.generate import generate_acte_zip
    from flows.actes.pdf import minimal_pdf

    deadline = time.monotonic() + BUDGET
    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    signers = [AirflowClient(platform.base_url, u, platform.secrets["passwords"][u])
               for u in sorted({u for o in coll.officials for u in o.users})]
    stamp = datetime.now(UTC).strftime("%H%M%S")
    acte = generate_acte_zip(collectivite=coll, numero=f"REP{stamp}", nature="DE", matiere="5.2",
                             objet="Délibération soumise à pièces complémentaires [simulateur:3-1]")
    sha = platform.drop(coll.slug, "actes", f"acte-reponse-{stamp}.zip", acte)

    def approve():
        for s in signers:
            answer_all(s)

    def dossier_with_letter():
        with session_scope(platform.database_url) as session:
            d = service.by_sha(session, sha)
            if d is None:
                return None
            assert d.state not in ("refuse_validation", "refuse_etat", "rejete_parapheur"), d.reason
            if any(e.event == "DemandePieceComplementaire" for e in d.journal):
                return d.id, d.idacte

    dossier_id, idacte = platform.wait(dossier_with_letter, deadline, "ARActe then DemandePieceComplementaire", tick=approve)
    inbox = platform.state / "inbox"
    alert = answers.courriers_dir(inbox, coll.slug) / f"ALERTE-{dossier_id}.txt"
    folder = answers.reply_folder(inbox, coll.slug, idacte)
    assert alert.exists() and "demande de pièces complémentaires" in alert.read_text()
    assert folder.is_dir()

    # the agent drops the pieces (written under a temporary name, then renamed, as a file manager does)
    pieces = minimal_pdf("Plan de financement", f"Acte {idacte}")
    for name, data in (("plan-financement.pdf", pieces),
                       ("reponse.json", json.dumps({"reponse": "3-4", "motif": "Plan signé joint",
                                                    "agent": "Mme Durand"}).encode())):
        tmp = folder / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    time.sleep(3)  # older than the readiness age
    _trigger(platform, "demat_actes_answers")  # "send now"; the schedule would do it within a minute

    def acknowledged():
        events = [e for e, _, _ in _events(platform, dossier_id)]
        return "ARPieceComplementaire" in events and events

    events = platform.wait(acknowledged, deadline, "3-4 transmitted and 3-5 received")
    assert events.index("ARActe") < events.index("DemandePieceComplementaire") < events.index("alerte") \
        < events.index("envoi_3-4") < events.index("ARPieceComplementaire")
    journal = _events(platform, dossier_id)
    ar = next(m for e, _, m in journal if e == "ARActe")
    assert "accusé réception" in ar
    sent = next(m for e, _, m in journal if e == "envoi_3-4")
    assert "pièces complémentaires (3-4)" in sent and "Plan signé joint" in sent
    assert not folder.exists()
    done = [p for p in (folder.parent / answers.DONE_DIR).iterdir() if p.name.startswith(idacte)]
    assert len(done) == 1 and (done[0] / "plan-financement.pdf").read_bytes() == pieces

    from simulators.counterparts import Ledger

    ledger = Ledger(platform.state / "simulators" / "prefecture" / "ledger.sqlite")
    with session_scope(platform.database_url) as session:
        envoi = session.query(answers.ActesEnvoi).filter_by(dossier_id=dossier_id, code="3-4").one()
        assert envoi.status == "acquitte"
        assert ledger.count(envoi.name) == 1  # transmitted exactly once

    # annulation of the transmission, on an agent's request
    _trigger(platform, "demat_actes_annulation", {"dossier_id": dossier_id, "motif": "Acte retiré par le conseil"})

    def cancelled():
        with session_scope(platform.database_url) as session:
            d = service.get(session, dossier_id)
            return d.state == "annule" and d

    platform.wait(cancelled, deadline, "6-1 transmitted, 6-2 received, dossier annulé")
    journal = _events(platform, dossier_id)
    events = [e for e, _, _ in journal]
    assert "annulation_demandee" in events and "envoi_6-1" in events
    assert any(e == "ARAnnulation" and to == "annule" for e, to, _ in journal)
    with session_scope(platform.database_url) as session:
        assert verify_chain(session).ok
