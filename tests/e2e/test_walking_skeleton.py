"""End to end on the embedded default: a real scheduler, dag-processor, triggerer and API server on
the embedded PostgreSQL, with the SFTP simulators. Dossiers are dropped into inboxes, approved
through the REST API as an official would, and must end archived (or refused, with the reason)."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime

import pytest
import requests

from flows.config import load_config
from flows.dossier import service, states
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from simulators.signer import REJECT, AirflowClient, answer_all

pytestmark = pytest.mark.e2e


def _drop(platform, coll: str, flow: str, name: str, data: bytes) -> str:
    folder = platform.state / "inbox" / coll / flow
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    return hashlib.sha256(data).hexdigest()


def _signers(platform, config):
    users = sorted(config.parapheur_users())
    return [AirflowClient(platform.base_url, u, platform.secrets["passwords"][u]) for u in users]


def _wait_final(platform, shas: list[str], config, *, timeout: float, decide=None) -> dict[str, str]:
    signers = _signers(platform, config)
    deadline = time.monotonic() + timeout
    ids: dict[str, str] = {}
    while time.monotonic() < deadline:
        for s in signers:
            answer_all(s, decide)
        with session_scope(platform.database_url) as session:
            for sha in shas:
                d = service.by_sha(session, sha)
                if d is not None:
                    ids[sha] = d.id
            finals = {sha: service.get(session, i).state for sha, i in ids.items()}
        if len(ids) == len(shas) and all(states.is_final(s) for s in finals.values()):
            return ids
        time.sleep(2)
    with session_scope(platform.database_url) as session:
        where = {sha[:8]: (service.get(session, i).state if (i := ids.get(sha)) else "absent") for sha in shas}
    pytest.fail(f"dossiers not final after {timeout} s: {where}")


def test_acte_and_pes_end_archived_and_invalid_refused(platform):
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    acte = generate_acte_zip(collectivite=coll, numero=f"E2E{stamp}", nature="DE", matiere="5.2",
                             objet="Délibération de test de bout en bout", n_annexes=1)
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic=f"PES_E2E_{stamp}", n_bordereaux=2)
    bad = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic=f"PES_E2E_KO_{stamp}", defects=("bad_iban",))
    sha_acte = _drop(platform, coll.slug, "actes", f"acte-{stamp}.zip", acte)
    sha_pes = _drop(platform, coll.slug, "helios", f"pes-{stamp}.xml", pes)
    sha_bad = _drop(platform, coll.slug, "helios", f"pes-ko-{stamp}.xml", bad)
    ids = _wait_final(platform, [sha_acte, sha_pes, sha_bad], config, timeout=600)

    with session_scope(platform.database_url) as session:
        d_acte = service.get(session, ids[sha_acte])
        d_pes = service.get(session, ids[sha_pes])
        d_bad = service.get(session, ids[sha_bad])
        assert d_acte.state == "archive", d_acte.reason
        assert d_pes.state == "archive", d_pes.reason
        expected = ["recu", "valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive"]
        for d in (d_acte, d_pes):
            assert [e.state_to for e in d.journal if e.state_to] == expected
            assert d.archive_id and d.message_identifier and d.transmission_name
        kinds_pes = {a.kind for a in d_pes.artefacts}
        assert {"original", "signed", "transmission", "acquit", "seda_package", "sae_reply"} <= kinds_pes
        kinds_acte = {a.kind for a in d_acte.artefacts}
        assert {"original", "signature", "transmission", "prefecture_ARActe", "seda_package", "sae_reply"} <= kinds_acte
        assert d_acte.idacte and d_acte.idacte.startswith("040-214002933-")
        approvals = [e for e in d_pes.journal if e.event == "approbation"]
        assert approvals and approvals[0].actor == "maire.saintsever"

        assert d_bad.state == "refuse_validation"
        assert "IBAN" in (d_bad.reason or "")
        assert verify_chain(session).ok

    rejected = platform.state / "inbox" / coll.slug / "helios" / "rejetes"
    kept = [p for p in rejected.iterdir() if p.name.endswith(f"pes-ko-{stamp}.xml")]
    assert kept and kept[0].read_bytes() == bad, "the refused original must be kept beside its explanation"
    explanation = kept[0].with_name(kept[0].name + ".erreur.txt").read_text()
    assert "IBAN" in explanation and "Correction" in explanation

    # exactly once on the counterparts' side
    ledger = platform.state / "simulators"
    from simulators.counterparts import Ledger

    for counterpart, name in (("dgfip", d_pes.transmission_name), ("prefecture", d_acte.transmission_name)):
        assert Ledger(ledger / counterpart / "ledger.sqlite").count(name) == 1


def test_parapheur_rejection_stops_the_dossier_with_who_and_why(platform):
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("cc-chalosse-tursan")
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic=f"PES_REJ_{stamp}", seed=7)
    sha = _drop(platform, coll.slug, "helios", f"pes-rej-{stamp}.xml", pes)
    ids = _wait_final(platform, [sha], config, timeout=300, decide=lambda d: (REJECT, "Montant du mandat 12 erroné"))
    with session_scope(platform.database_url) as session:
        d = service.get(session, ids[sha])
        assert d.state == "rejete_parapheur"
        assert "Montant du mandat 12 erroné" in d.reason and "president.chalosse" in d.reason
        assert "transmission" not in {a.kind for a in d.artefacts}


def test_contrat_goes_through_two_visas_then_the_signature(platform):
    """The CC's contrats: DGS visa, finance visa, then the president signs; unused steps never run."""
    import requests

    from flows.actes.generate import generate_acte_zip
    from flows.pipeline.ingest import run_id_for

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("cc-chalosse-tursan")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    contrat = generate_acte_zip(collectivite=coll, numero=f"CTR{stamp}", nature="CC", matiere="1.1",
                                objet="Convention de mise à disposition de personnel")
    deliberation = generate_acte_zip(collectivite=coll, numero=f"DEL{stamp}", nature="DE", matiere="5.2")
    sha = _drop(platform, coll.slug, "actes", f"contrat-{stamp}.zip", contrat)
    sha_de = _drop(platform, coll.slug, "actes", f"deliberation-{stamp}.zip", deliberation)
    ids = _wait_final(platform, [sha, sha_de], config, timeout=600)
    with session_scope(platform.database_url) as session:
        d = service.get(session, ids[sha])
        assert d.state == "archive", d.reason
        approvals = [(e.actor, e.details.get("step"), e.details.get("kind")) for e in d.journal if e.event == "approbation"]
        assert approvals == [("dgs.chalosse", 1, "VISA"), ("finances.chalosse", 2, "VISA"),
                             ("president.chalosse", 3, "SIGNATURE")]
        assert service.get(session, ids[sha_de]).state == "archive"
    token = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": "admin", "password": platform.secrets["passwords"]["admin"]}).json()["access_token"]

    def task_states(dossier_id: str) -> dict[str, str]:
        r = requests.get(f"{platform.base_url}/api/v2/dags/demat_acte/dagRuns/{run_id_for(dossier_id)}/taskInstances",
                         headers={"Authorization": f"Bearer {token}"}, timeout=20)
        r.raise_for_status()
        return {t["task_id"]: t["state"] for t in r.json()["task_instances"]}

    assert task_states(ids[sha]) == {
        "validate": "success", "parapheur_1": "success", "parapheur_2": "success", "parapheur_3": "success",
        "parapheur_4": "skipped", "parapheur_5": "skipped", "sign_and_transmit": "success"}
    assert task_states(ids[sha_de]) == {
        "validate": "success", "parapheur_1": "success", "parapheur_2": "skipped", "parapheur_3": "skipped",
        "parapheur_4": "skipped", "parapheur_5": "skipped", "sign_and_transmit": "success"}


def test_forty_dossiers_at_once_and_no_component_dies(platform):
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    before = platform.airflow_processes()
    assert set(before) == {"scheduler", "dag-processor", "triggerer", "api-server"}, before
    shas = []
    stamp = datetime.now(UTC).strftime("%H%M%S")
    for i in range(40):
        coll = config.collectivites[i % 2]
        if i % 10 >= 3:  # 28 actes and 12 PES: both flows, bounded CI time (each PES runs the GX tiers suite)
            data = generate_acte_zip(collectivite=coll, numero=f"L{stamp}{i:02d}", nature="AR", matiere="6.1",
                                     objet=f"Arrêté de charge {i}")
            shas.append(_drop(platform, coll.slug, "actes", f"arrete-{i}.zip", data))
        else:
            data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                codbud=coll.helios.codbud, nomfic=f"PES_LOAD_{stamp}_{i:02d}", seed=i)
            shas.append(_drop(platform, coll.slug, "helios", f"pes-{i}.xml", data))
    ids = _wait_final(platform, shas, config, timeout=900)
    with session_scope(platform.database_url) as session:
        finals = [service.get(session, i).state for i in ids.values()]
    assert finals == ["archive"] * 40
    after = platform.airflow_processes()
    assert after == before, f"an Airflow component died or restarted: {before} -> {after}"
    health = requests.get(f"{platform.base_url}/api/v2/monitor/health", timeout=10).json()
    for component in ("scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
