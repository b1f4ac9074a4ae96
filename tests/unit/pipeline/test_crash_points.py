"""Crash points of the domain steps, on a real PostgreSQL and real SFTP counterparts on loopback.

At each point a crash is simulated (an exception raised inside a patched function, or SIGKILL of a
child process running the step), then the step is run again. Every document must be transmitted
exactly once and archived exactly once (counted in the simulators' ledgers), the journal must
have no gap (chain intact, every transition present exactly once), and the final state reached.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import paramiko
import pytest

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.dossier.models import InboundMessage
from flows.pipeline import collect as collect_mod
from flows.pipeline import deposit, inbox, ingest, steps
from flows.settings import REPO, Settings
from flows.transport.sftp import SftpEndpoint
from simulators.counterparts import Settings as CpSettings
from simulators.run import Simulators
from simulators.sftpd import ServerThread

COLL = "saint-sever"
FLOW_PATH = ["recu", "valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive"]
INJECTED: list[str] = []


class Crash(RuntimeError):
    """The simulated crash."""


def crash_once(monkeypatch, target, attr: str, *, after: bool = False, label: str = ""):
    """Replace target.attr so that its first call raises Crash (before or after doing its work)."""
    original = getattr(target, attr)
    state = {"done": False}

    def wrapper(*args, **kwargs):
        if state["done"]:
            return original(*args, **kwargs)
        state["done"] = True
        INJECTED.append(label or attr)
        if after:
            original(*args, **kwargs)
        raise Crash(f"crash simulé : {label or attr}")

    monkeypatch.setattr(target, attr, wrapper)
    return state


@pytest.fixture
def platform(tmp_path, demat_db, monkeypatch):
    """Settings on a temp state, a demo PKI, and the three counterparts over real SFTP; the
    counterparts' processing is driven by the test (poll_once) so that every step is deterministic."""
    from flows.signature.pki import create_demo_pki

    state = tmp_path / "state"
    monkeypatch.setenv("DEMAT_STATE", str(state))
    monkeypatch.setenv("DEMAT_INBOX", str(state / "inbox"))
    s = Settings(
        state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
        store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
        reference_dir=tmp_path / "reference",
    )
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    officials = [(o.certificate, o.name, o.role) for c in s.config.collectivites for o in c.officials]
    create_demo_pki(s.pki_dir, officials, ca_key_size=2048)
    agreements = sorted({p.archival_agreement for c in s.config.collectivites for p in c.archive.values()})
    cps = {
        "prefecture": CpSettings(delay=0, later_delay=0),
        "dgfip": CpSettings(delay=0, later_delay=0, extra={"tiers_gate": False}),
        "sae": CpSettings(delay=0, later_delay=0, extra={"known_agreements": agreements,
                                                         "seda_version": s.config.seda_version}),
    }
    sims = Simulators(state, settings=cps)
    servers = ServerThread(sims.servers.values()).start()  # SFTP only: processing driven below
    eps = sims.endpoints()

    def factory(name: str) -> SftpEndpoint:
        e = eps[name]
        return SftpEndpoint(e["host"], e["port"], e["username"], e["key_path"], e["host_key"], timeout=10)

    yield s, sims, factory
    servers.stop()
    for cp in sims.counterparts.values():
        cp.ledger.close()


def _drop(settings: Settings):
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    coll = settings.config.collectivite(COLL)
    files = {
        ("helios", "PES-crash.xml"): generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                                  codbud=coll.helios.codbud, nomfic="PESCRASH01", seed=3),
        ("actes", "acte-crash.zip"): generate_acte_zip(collectivite=coll, numero="CRASH2026_01"),
    }
    for (flow, name), data in files.items():
        p = settings.inbox_root / COLL / flow / name
        p.write_bytes(data)
        old = time.time() - 60
        os.utime(p, (old, old))


def _poll(sims: Simulators) -> None:
    for cp in sims.counterparts.values():
        cp.poll_once(now=time.time() + 3600)  # every reply due


def _approve(settings: Settings, dossier_id: str) -> None:
    req = steps.parapheur_request(settings, dossier_id)
    assert req.action == "ask" and req.last
    decision = {"chosen_options": [steps.APPROVE], "responded_by_user": {"id": "maire.saintsever", "name": "Claire Dupré"}}
    assert steps.record_decision(settings, dossier_id, decision).action == "approved"
    assert steps.sign(settings, dossier_id).state == "signe"


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from flows.settings import Settings
    from flows.transport.sftp import SftpEndpoint
    import paramiko, json
    args = json.loads(sys.argv[1])
    s = Settings(state_dir=Path(args["state"]), config_path=Path(args["config"]), database_url=args["db"],
                 store_root=args["store"], inbox_root=Path(args["inbox"]), pki_dir=Path(args["pki"]),
                 reference_dir=Path(args["state"]))
    eps = args["eps"]
    factory = lambda n: SftpEndpoint(eps[n]["host"], eps[n]["port"], eps[n]["username"], eps[n]["key_path"],
                                     eps[n]["host_key"], timeout=10)
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if args["point"] == "transmit-before-rename":
        paramiko.SFTPClient.posix_rename = die
        from flows.pipeline import steps
        steps.transmit(s, args["dossier"], factory, "/depot")
    elif args["point"] == "deposit-after-upload":
        from flows.pipeline import deposit
        original = SftpEndpoint.upload_atomic
        def upload_then_die(self, *a, **k):
            original(self, *a, **k)
            die()
        SftpEndpoint.upload_atomic = upload_then_die
        deposit.deposit_ready(s, factory, "/depot")
""")


def _kill_child(settings: Settings, sims: Simulators, point: str, dossier_id: str = "") -> None:
    import json

    args = {"state": str(settings.state_dir), "config": str(settings.config_path), "db": settings.database_url,
            "store": settings.store_root, "inbox": str(settings.inbox_root), "pki": str(settings.pki_dir),
            "eps": sims.endpoints(), "point": point, "dossier": dossier_id}
    p = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(args)], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == -signal.SIGKILL, f"le processus fils devait être tué : {p.returncode}\n{p.stderr[-2000:]}"
    INJECTED.append(f"kill -9 : {point}")


def test_crash_at_every_point_loses_nothing_and_duplicates_nothing(platform, monkeypatch, capsys):
    settings, sims, factory = platform
    _drop(settings)

    # 1. ingest: crash after claiming, before recording ...
    with monkeypatch.context() as m:
        crash_once(m, service, "create", label="réception : après réservation, avant enregistrement")
        with pytest.raises(Crash):
            ingest.sweep(settings, min_age=1.0)
    assert len(list(inbox.list_claimed(settings.work_dir))) == 2  # both still recoverable
    # ... and after recording, before moving the claimed file away
    with monkeypatch.context() as m:
        crash_once(m, ingest, "_done_path", label="réception : après enregistrement, avant déplacement")
        with pytest.raises(Crash):
            ingest.sweep(settings, claim_stable=False)
    started = ingest.sweep(settings, claim_stable=False)
    started += [s for s in ingest.sweep(settings, claim_stable=False) if s not in started]
    assert sorted(s.flow for s in started) == ["actes", "helios"], started
    assert not list(inbox.list_claimed(settings.work_dir))
    assert not list((settings.inbox_root / COLL).rglob("rejetes/*")), "refusé à tort comme doublon"
    ids = {s.flow: s.dossier_id for s in started}

    # 2. validation: crash inside the transaction (after the report is attached), then again
    with monkeypatch.context() as m:
        crash_once(m, service, "transition", label="validation : avant la transition")
        with pytest.raises(Crash):
            steps.validate(settings, ids["actes"])
    for dossier_id in ids.values():
        assert steps.validate(settings, dossier_id).state == "valide"
        _approve(settings, dossier_id)

    # 3. transmission: after upload, before rename (a .part left on the real SFTP server)
    with monkeypatch.context() as m:
        crash_once(m, paramiko.SFTPClient, "posix_rename", label="transmission : après envoi, avant renommage")
        with pytest.raises(Crash):
            steps.transmit(settings, ids["helios"], factory, "/depot")
    depot = sims.counterparts["dgfip"].depot
    assert [p.name for p in depot.iterdir()] and all(p.name.endswith(".part") for p in depot.iterdir())
    _poll(sims)  # the counterpart must not take a .part
    assert sims.counterparts["dgfip"].ledger.receptions() == []
    assert steps.transmit(settings, ids["helios"], factory, "/depot").state == "transmis"
    # kill -9 of a child process between upload and rename (actes), then the same crash after rename
    _kill_child(settings, sims, "transmit-before-rename", ids["actes"])
    with monkeypatch.context() as m:
        crash_once(m, steps, "mark_transmitted", label="transmission : après renommage, avant « transmis »")
        with pytest.raises(Crash):
            steps.transmit(settings, ids["actes"], factory, "/depot")
    assert steps.transmit(settings, ids["actes"], factory, "/depot").state == "transmis"
    assert steps.transmit(settings, ids["actes"], factory, "/depot").state == "transmis"  # a late retry
    _poll(sims)

    # 4. acknowledgment collection: after recording, before moving the remote file
    with monkeypatch.context() as m:
        crash_once(m, SftpEndpoint, "move", label="collecte : après enregistrement, avant déplacement distant")
        with pytest.raises(Crash):
            collect_mod.collect(settings, "dgfip", factory, "/retour")
    for cp in ("dgfip", "prefecture"):
        collect_mod.collect(settings, cp, factory, "/retour")
        collect_mod.collect(settings, cp, factory, "/retour")

    # 5. archive deposit: after upload, before recording "déposé"
    original_upload = SftpEndpoint.upload_atomic
    with monkeypatch.context() as m:
        def upload_then_crash(self, *a, **k):
            original_upload(self, *a, **k)
            m.setattr(SftpEndpoint, "upload_atomic", original_upload)
            INJECTED.append("dépôt SAE : après envoi, avant enregistrement")
            raise Crash("crash simulé après le dépôt")
        m.setattr(SftpEndpoint, "upload_atomic", upload_then_crash)
        with pytest.raises(Crash):
            deposit.deposit_ready(settings, factory, "/depot")
    _kill_child(settings, sims, "deposit-after-upload")
    deposit.deposit_ready(settings, factory, "/depot")
    deposit.deposit_ready(settings, factory, "/depot")
    _poll(sims)
    with monkeypatch.context() as m:
        crash_once(m, SftpEndpoint, "move", label="collecte SAE : après enregistrement, avant déplacement distant")
        with pytest.raises(Crash):
            collect_mod.collect(settings, "sae", factory, "/retour")
    collect_mod.collect(settings, "sae", factory, "/retour")
    _poll(sims)
    collect_mod.collect(settings, "sae", factory, "/retour")

    # ---- what the counterparts received, what the journal says
    duplicates, losses = [], []
    with session_scope(settings.database_url) as session:
        check = verify_chain(session)
        assert check.ok, check
        for flow, dossier_id in ids.items():
            d = service.get(session, dossier_id)
            if d.state != "archive":
                losses.append(f"{flow}: état final {d.state}")
            cp = "dgfip" if flow == "helios" else "prefecture"
            sent = sims.counterparts[cp].ledger.count(d.transmission_name)
            package = service.artefact(d, "seda_package").name
            archived = sims.counterparts["sae"].ledger.count(package)
            if sent != 1:
                (duplicates if sent > 1 else losses).append(f"{flow}: transmis {sent} fois")
            if archived != 1:
                (duplicates if archived > 1 else losses).append(f"{flow}: archivé {archived} fois")
            path = [(e.state_from, e.state_to) for e in d.journal if e.state_to]
            expected = [(None, "recu")] + list(zip(FLOW_PATH, FLOW_PATH[1:], strict=False))
            assert path == expected, f"{flow}: journal {path}"
        inbound = session.query(InboundMessage).all()
        shas = [(m.counterpart, m.sha256) for m in inbound]
        assert len(shas) == len(set(shas))
    for cp in sims.counterparts.values():
        assert not [p for p in cp.depot.iterdir() if p.name.endswith(".part")], f"{cp.name}: .part oublié"
        assert not list((cp.retour).glob("*.xml")) and not list(cp.retour.glob("*.gz")), f"{cp.name}: réponse non traitée"
    with capsys.disabled():
        print(f"\n[crash] {len(INJECTED)} crashs injectés ({sum('kill' in i for i in INJECTED)} kill -9) ; "
              f"doublons : {len(duplicates)} ; pertes : {len(losses)}")
        for i in INJECTED:
            print(f"  - {i}")
    assert duplicates == [] and losses == [], duplicates + losses


def test_crash_after_writing_the_refusal_before_commit(tmp_path, demat_db, monkeypatch):
    """validate() writes the refused original into rejetes/ inside its transaction: a crash before
    the commit, then the retry, must leave one refusal in the journal and the original kept."""
    from flows.helios.generate import generate_pes

    state = tmp_path / "state"
    s = Settings(state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
                 store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
                 reference_dir=tmp_path)
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    coll = s.config.collectivite(COLL)
    good = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                        codbud=coll.helios.codbud, nomfic="PESKO01")
    bad = good[: len(good) // 2]  # truncated: refused at reading (no tiers gate, fast)
    p = s.inbox_root / COLL / "helios" / "PES-ko.xml"
    p.write_bytes(bad)
    os.utime(p, (time.time() - 60, time.time() - 60))
    (started,) = ingest.sweep(s, min_age=1.0)
    with monkeypatch.context() as m:
        crash_once(m, inbox, "reject_beside", after=True, label="refus : après l'écriture dans rejetes/, avant commit")
        with pytest.raises(Crash):
            steps.validate(s, started.dossier_id)
    assert steps.validate(s, started.dossier_id).state == "refuse_validation"
    rejected = s.inbox_root / COLL / "helios" / inbox.REJECTED
    originals = [f for f in rejected.iterdir() if f.name.endswith("_PES-ko.xml")]
    assert originals and all(f.read_bytes() == bad for f in originals)
    with session_scope(s.database_url) as session:
        d = service.get(session, started.dossier_id)
        assert [e.state_to for e in d.journal if e.state_to] == ["recu", "refuse_validation"]
        assert verify_chain(session).ok
    # the retry may write the refusal a second time (same second: same name, overwritten)
    print(f"\n[crash] refus après écriture, avant commit : {len(originals)} copie(s) dans rejetes/")


def test_counterparts_down_or_hanging_make_dossiers_wait_with_the_reason(platform):
    """The DGFiP refuses connections, the préfecture accepts then never answers, the SAE is down:
    each send fails as transient (the task's retries take over), the dossier says in French what
    it waits for (journaled once per reason), nothing is sent; once they are back every dossier
    goes on, each sent exactly once, and the waiting reason is gone."""
    from flows.transport.errors import TransientError

    settings, sims, connect = platform

    def factory(name: str) -> SftpEndpoint:
        ep = connect(name)
        ep.timeout = 3  # a hanging gateway costs seconds, not minutes
        return ep

    def waiting(dossier_id: str) -> tuple[str | None, int]:
        with session_scope(settings.database_url) as s:
            d = service.get(s, dossier_id)
            return d.waiting_reason, sum(1 for e in d.journal if e.event == "attente")

    _drop(settings)
    ids = {s.flow: s.dossier_id for s in ingest.sweep(settings, min_age=1.0)}
    for dossier_id in ids.values():
        steps.validate(settings, dossier_id)
        _approve(settings, dossier_id)
    # a gateway presenting another host key than the pinned one: refused, nothing sent, the dossier says why
    from flows.transport.errors import HostKeyMismatch

    eps = sims.endpoints()

    def impostor(name: str) -> SftpEndpoint:  # pinned: the SAE's real key, not this gateway's
        e = eps[name]
        return SftpEndpoint(e["host"], e["port"], e["username"], e["key_path"], eps["sae"]["host_key"], timeout=3)

    with pytest.raises(HostKeyMismatch):
        steps.transmit(settings, ids["helios"], impostor, "/depot")
    assert "clé d'hôte" in waiting(ids["helios"])[0] and "bloqué" in waiting(ids["helios"])[0]
    down = sims.counterparts["dgfip"].root / "DOWN"
    hang = sims.counterparts["prefecture"].root / "HANG"
    down.touch()
    hang.touch()
    for _ in range(2):  # two retries of the task
        for dossier_id in ids.values():
            with pytest.raises(TransientError):
                steps.transmit(settings, dossier_id, factory, "/depot")
    reason, notes = waiting(ids["helios"])
    assert reason.startswith("Envoi à la DGFiP (Hélios) en attente") and "Nouvel essai automatique" in reason
    assert notes == 2, "journaled once per reason (the host key, then the outage), not once per retry"
    assert waiting(ids["actes"])[0].startswith("Envoi à la préfecture (@ctes) en attente")
    down.unlink()
    hang.unlink()
    for dossier_id in ids.values():
        assert steps.transmit(settings, dossier_id, factory, "/depot").state == "transmis"
        assert waiting(dossier_id)[0] is None
    _poll(sims)
    for cp in ("dgfip", "prefecture"):
        collect_mod.collect(settings, cp, factory, "/retour")

    sae_down = sims.counterparts["sae"].root / "DOWN"
    sae_down.touch()
    with pytest.raises(TransientError):
        deposit.deposit_ready(settings, factory, "/depot")
    for dossier_id in ids.values():  # the first one failed, the other waits for the same SAE
        assert "SAE en attente" in waiting(dossier_id)[0]
    sae_down.unlink()
    assert sorted(deposit.deposit_ready(settings, factory, "/depot")) == sorted(ids.values())
    _poll(sims)
    with session_scope(settings.database_url) as s:
        for dossier_id in ids.values():
            d = service.get(s, dossier_id)
            assert d.state == "depose_sae" and d.waiting_reason is None
            counterpart = "prefecture" if d.flow == "actes" else "dgfip"
            assert sims.counterparts[counterpart].ledger.count(d.transmission_name) == 1
            assert sims.counterparts["sae"].ledger.count(service.artefact(d, "seda_package").name) == 1
        assert verify_chain(s).ok
