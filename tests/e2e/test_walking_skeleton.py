"""End to end on the embedded default: a real scheduler, dag-processor, triggerer and API server on
the embedded PostgreSQL, with the SFTP simulators. Dossiers are dropped into inboxes, approved
through the REST API as an official would, and must end archived (or refused, with the reason)."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from datetime import UTC, datetime

import psutil
import pytest
import requests

from flows.config import load_config
from flows.dossier import service, states
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.pipeline.ingest import run_id_for
from simulators.signer import REJECT, AirflowClient, answer_all

pytestmark = pytest.mark.e2e


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
    sha_acte = platform.drop(coll.slug, "actes", f"acte-{stamp}.zip", acte)
    sha_pes = platform.drop(coll.slug, "helios", f"pes-{stamp}.xml", pes)
    sha_bad = platform.drop(coll.slug, "helios", f"pes-ko-{stamp}.xml", bad)
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
    sha = platform.drop(coll.slug, "helios", f"pes-rej-{stamp}.xml", pes)
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

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("cc-chalosse-tursan")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    contrat = generate_acte_zip(collectivite=coll, numero=f"CTR{stamp}", nature="CC", matiere="1.1",
                                objet="Convention de mise à disposition de personnel")
    deliberation = generate_acte_zip(collectivite=coll, numero=f"DEL{stamp}", nature="DE", matiere="5.2")
    sha = platform.drop(coll.slug, "actes", f"contrat-{stamp}.zip", contrat)
    sha_de = platform.drop(coll.slug, "actes", f"deliberation-{stamp}.zip", deliberation)
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
        "parapheur_4": "skipped", "parapheur_5": "skipped", "automatic_circuit": "skipped",
        "sign_and_transmit": "success"}
    assert task_states(ids[sha_de]) == {
        "validate": "success", "parapheur_1": "success", "parapheur_2": "skipped", "parapheur_3": "skipped",
        "parapheur_4": "skipped", "parapheur_5": "skipped", "automatic_circuit": "skipped",
        "sign_and_transmit": "success"}


@contextmanager
def _configured(platform, change):
    """Run with the platform's configuration changed by `change(data)` (every task reads it afresh)."""
    import shutil

    import yaml

    config_path = platform.state / "config.yaml"
    kept = config_path.with_name("config.yaml.kept")
    shutil.copyfile(config_path, kept)
    try:
        data = yaml.safe_load(config_path.read_text())
        change(data)
        tmp = config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data, allow_unicode=True))
        os.replace(tmp, config_path)
        yield load_config(config_path)
    finally:
        os.replace(kept, config_path)


def _collectivite(data: dict, slug: str) -> dict:
    return next(c for c in data["collectivites"] if c["slug"] == slug)


def _arrete_to_the_end(platform, config, slug: str, tag: str, objet: str) -> str:
    """Drop an arrêté of `slug`, answer its parapheur as the officials would, return its final dossier's id."""
    from flows.actes.generate import generate_acte_zip

    stamp = datetime.now(UTC).strftime("%H%M%S")
    arrete = generate_acte_zip(collectivite=config.collectivite(slug), numero=f"{tag}{stamp}", nature="AR",
                               matiere="6.1", objet=objet)
    sha = platform.drop(slug, "actes", f"arrete-{tag.lower()}-{stamp}.zip", arrete)
    return _wait_final(platform, [sha], config, timeout=600)[sha]


def test_sae_refusal_ends_the_dossier_with_the_reason_in_french(platform):
    """The CC's arrêtés are given an archival agreement the SAE does not know: the package is
    deposited, refused, and the dossier says so (journal, API) in French; nothing is deposited twice."""
    from simulators.counterparts import Ledger

    def unknown_agreement(data: dict) -> None:
        _collectivite(data, "cc-chalosse-tursan")["archive"]["arrete"] = {
            "archival_agreement": "ACCORD-INCONNU-DU-SAE", "dua_years": 5}

    with _configured(platform, unknown_agreement) as config:
        d_id = _arrete_to_the_end(platform, config, "cc-chalosse-tursan", "SAE", "Arrêté de circulation temporaire")
    with session_scope(platform.database_url) as session:
        d = service.get(session, d_id)
        assert d.state == "refuse_sae", (d.state, d.reason)
        assert "ACCORD-INCONNU-DU-SAE" in d.reason and "inconnu" in d.reason
        package = service.artefact(d, "seda_package").name
        assert {"seda_package", "sae_reply"} <= {a.kind for a in d.artefacts}
    assert Ledger(platform.state / "simulators" / "sae" / "ledger.sqlite").count(package) == 1
    token = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": "agent.chalosse", "password": platform.secrets["passwords"]["agent.chalosse"]}).json()["access_token"]
    seen = requests.get(f"{platform.base_url}/demat/api/v1/dossiers/{d_id}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=20).json()
    assert seen["libelle"] == "Refusé par le SAE" and seen["final"] is True
    assert "ACCORD-INCONNU-DU-SAE" in seen["motif"]


def test_automatic_circuit_skips_the_parapheur_without_a_task_process(platform):
    """Saint-Sever's arrêtés get a circuit without anyone (AUTO naming the mayor): the validate task
    also signs (detached XAdES, Saint-Sever's setting, with the mayor's certificate) and transmits,
    then branches past the parapheur to a task the scheduler completes itself; one task process
    for the whole dossier until the collection, and the acte is archived."""

    def automatic(data: dict) -> None:
        _collectivite(data, "saint-sever")["circuits"]["arrete"] = [{"kind": "AUTO", "official": "maire"}]

    with _configured(platform, automatic) as config:
        d_id = _arrete_to_the_end(platform, config, "saint-sever", "AUT", "Arrêté signé sans intervention")
    with session_scope(platform.database_url) as session:
        d = service.get(session, d_id)
        assert d.state == "archive", (d.state, d.reason)
        signed = next(e for e in d.journal if e.event == "signe")
        assert "sans intervention" in signed.message and signed.actor == "demat"
        assert "au_parapheur" not in [e.state_to for e in d.journal]
        assert service.artefact(d, "signature") is not None  # the detached XAdES sent as 99_SE
    token = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": "admin", "password": platform.secrets["passwords"]["admin"]}).json()["access_token"]
    r = requests.get(f"{platform.base_url}/api/v2/dags/demat_acte/dagRuns/{run_id_for(d_id)}/taskInstances",
                     headers={"Authorization": f"Bearer {token}"}, timeout=20)
    tis = {t["task_id"]: t for t in r.json()["task_instances"]}
    assert {k: t["state"] for k, t in tis.items()} == {
        "validate": "success", "automatic_circuit": "success", "sign_and_transmit": "skipped",
        **{f"parapheur_{i}": "skipped" for i in range(1, 6)}}
    assert tis["automatic_circuit"]["pid"] is None  # marked done by the scheduler, no process started


def _kill_task_process(platform, token: str, task_ids: set[str]) -> str | None:
    """kill -9 the running task process of one of `task_ids` (its title is "airflow worker -- <ti id>")."""
    r = requests.get(f"{platform.base_url}/api/v2/dags/~/dagRuns/~/taskInstances", params={"state": "running"},
                     headers={"Authorization": f"Bearer {token}"}, timeout=20)
    running = {t["id"]: t["task_id"] for t in r.json().get("task_instances", []) if t["task_id"] in task_ids}
    for proc in psutil.Process(platform.proc.pid).children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for ti_id, task_id in running.items():
            if f"airflow worker -- {ti_id}" in title:
                proc.kill()
                return task_id
    return None


def _kill_component(platform, name: str) -> None:
    """kill -9 an Airflow component, then wait for the launcher's watchdog to start it again."""
    old = platform.airflow_processes()[name]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 180
    while platform.airflow_processes().get(name) in (None, old):
        assert time.monotonic() < deadline, f"{name} was not restarted after kill -9"
        time.sleep(1)


def test_fifty_dossiers_survive_kill_9_of_triggerer_scheduler_and_tasks(platform):
    """A batch of 50 dossiers of both flows, while the triggerer (claiming files), the scheduler and
    task processes (transmission, collection and deposit) are killed with SIGKILL: every dossier
    ends archived, each transmitted and archived exactly once (counted by the counterparts), and the
    journal has neither gap nor repeated step."""
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes
    from simulators.counterparts import Ledger

    config = load_config(platform.state / "config.yaml")
    assert set(platform.airflow_processes()) == {"scheduler", "dag-processor", "triggerer", "api-server"}
    token = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": "admin", "password": platform.secrets["passwords"]["admin"]}).json()["access_token"]
    stamp = datetime.now(UTC).strftime("%H%M%S")
    files = []
    for i in range(50):
        coll = config.collectivites[i % 2]
        if i % 10 >= 3:  # 35 actes and 15 PES: both flows, bounded CI time (each PES runs the GX tiers suite)
            data = generate_acte_zip(collectivite=coll, numero=f"K{stamp}{i:02d}", nature="AR", matiere="6.1",
                                     objet=f"Arrêté de charge {i}")
            files.append((coll.slug, "actes", f"arrete-{i}.zip", data))
        else:
            data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                codbud=coll.helios.codbud, nomfic=f"PES_KILL_{stamp}_{i:02d}", seed=i)
            files.append((coll.slug, "helios", f"pes-{i}.xml", data))
    shas = [platform.drop(*f) for f in files[:25]]
    _kill_component(platform, "triggerer")  # while it claims the first half
    shas += [platform.drop(*f) for f in files[25:]]

    signers = _signers(platform, config)
    killed: list[str] = []
    targets = [{"sign_and_transmit"}, {"collect_and_deposit"}, {"sign_and_transmit"}, {"collect_and_deposit"}]
    scheduler_killed = False
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        for s in signers:
            try:
                answer_all(s)
            except requests.RequestException:
                pass  # the API server is busy: next round
        with session_scope(platform.database_url) as session:
            found = [service.by_sha(session, sha) for sha in shas]
            states_now = [d.state if d else "absent" for d in found]
        if targets and (task := _kill_task_process(platform, token, targets[0])):
            killed.append(task)
            targets.pop(0)
        if not scheduler_killed and states_now.count("transmis") + states_now.count("acquitte") >= 5:
            _kill_component(platform, "scheduler")
            scheduler_killed = True
        if all(s == "archive" for s in states_now):
            break
        time.sleep(1)
    assert all(s == "archive" for s in states_now), {s: states_now.count(s) for s in set(states_now)}
    assert scheduler_killed and killed, f"the faults were not all injected: scheduler={scheduler_killed}, tasks={killed}"

    ledgers = {cp: Ledger(platform.state / "simulators" / cp / "ledger.sqlite") for cp in ("prefecture", "dgfip", "sae")}
    expected = ["recu", "valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive"]
    with session_scope(platform.database_url) as session:
        for sha in shas:
            d = service.by_sha(session, sha)
            counterpart = "prefecture" if d.flow == "actes" else "dgfip"
            assert ledgers[counterpart].count(d.transmission_name) == 1, d.id
            package = service.artefact(d, "seda_package")
            assert ledgers["sae"].count(package.name) == 1, d.id
            assert [e.state_to for e in d.journal if e.state_to] == expected, d.id
        assert verify_chain(session).ok
    restarts = (platform.state / "launcher.log").read_text(errors="replace")
    assert "« triggerer » arrêté" in restarts and "« scheduler » arrêté" in restarts
    health = requests.get(f"{platform.base_url}/api/v2/monitor/health", timeout=10).json()
    for component in ("scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
