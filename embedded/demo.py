"""`make demo`: drop sample documents, sign as the officials through the REST API, print timelines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from embedded.platform import REPO, Layout, api_ready, log


@dataclass
class InboxFile:
    """A document for a collectivité's inbox (the demo's samples, the benchmarks' documents)."""

    collectivite: str  # slug
    flow: str  # actes | helios
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def drop(self, inbox: Path) -> float:
        """Write beside, then os.replace into the inbox, so the watcher never sees half a file.
        Returns the wall time of the replace."""
        folder = inbox / self.collectivite / self.flow
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{self.name}.part"
        tmp.write_bytes(self.data)
        t = time.time()
        os.replace(tmp, folder / self.name)
        return t


@dataclass
class Drop(InboxFile):
    label: str
    expected: str  # the state the dossier must end in


def stop_launcher(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGINT to a launcher's process group (it stops what it started), SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def samples(config, stamp: str) -> list[Drop]:
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    drops: list[Drop] = []
    for i, coll in enumerate(config.collectivites):
        numero = f"D{stamp[-8:]}{i}"
        acte = generate_acte_zip(collectivite=coll, numero=numero, nature="DE", matiere="5.2",
                                 objet=f"Délibération de démonstration {numero} : désignation des délégués",
                                 n_annexes=1)
        drops.append(Drop(coll.slug, "actes", f"deliberation-{numero}.zip", acte,
                          f"Délibération {numero} ({coll.name})", "archive"))
        if coll.helios:
            nomfic = f"PES_DEMO_{stamp}_{i}"
            pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                               codbud=coll.helios.codbud, nomfic=nomfic, n_bordereaux=2, seed=i)
            drops.append(Drop(coll.slug, "helios", f"{nomfic}.xml", pes, f"PES {nomfic} ({coll.name})", "archive"))
    first = config.collectivites[0]
    if first.helios:
        nomfic = f"PES_DEMO_{stamp}_KO"
        bad = generate_pes(siret=first.siret, idpost=first.helios.idpost, codcol=first.helios.codcol,
                           codbud=first.helios.codbud, nomfic=nomfic, defects=("bad_iban",), seed=99)
        drops.append(Drop(first.slug, "helios", f"{nomfic}.xml", bad, f"PES {nomfic} avec un IBAN faux ({first.name})",
                          "refuse_validation"))
    return drops


def _database_url(layout: Layout) -> str:
    from embedded.postgres import EmbeddedPostgres

    port = int((layout.state / "postgres.port").read_text())
    return EmbeddedPostgres(layout.pg_root, port=port).url("demat")


def _start_platform(layout: Layout, port: int, config: Path) -> subprocess.Popen:
    layout.state.mkdir(parents=True, exist_ok=True)  # a first `make demo` on a new state folder
    logfile = (layout.state / "run.log").open("ab")
    log(f"demat ne tourne pas : démarrage en arrière-plan (journal : {layout.state / 'run.log'})")
    return subprocess.Popen([sys.executable, "-m", "embedded", "run", "--state", str(layout.state), "--port", str(port),
                             "--config", str(config)], cwd=REPO, stdout=logfile, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "DEMAT_STATE": str(layout.state)})


def _running(layout: Layout) -> bool:
    """A `make run` is alive on this state folder (whether or not its API answers yet)."""
    import psutil

    if not layout.run_file.exists():
        return False
    pid = json.loads(layout.run_file.read_text()).get("pid", -1)
    return psutil.pid_exists(pid)


def _wait_ready(layout: Layout, port: int, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ((layout.state / "ready").exists() and api_ready(port)):
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"Le démarrage de demat a échoué : voir {layout.state / 'run.log'}")
        if time.monotonic() > deadline:
            raise SystemExit("demat n'est pas prêt dans le délai imparti")
        time.sleep(1)


def answer_pending(client, answer_all) -> list[tuple[str, str]]:
    """The official's pending approvals, answered; an API that does not answer in time (timeout,
    refused connection, 5xx while the API server is busy) is tried again at the next round
    instead of ending the demo."""
    import requests

    try:
        return answer_all(client)
    except (requests.Timeout, requests.ConnectionError) as exc:
        log(f"{client.username} : l'API de demat ne répond pas ({type(exc).__name__}) ; nouvel essai au prochain tour")
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is None or status < 500:
            raise
        log(f"{client.username} : l'API de demat répond {status} ; nouvel essai au prochain tour")
    return []


def timeline(session, dossier_id: str, t0: datetime) -> str:
    from flows.dossier import service, states

    d = service.get(session, dossier_id)
    lines = [f"{d.id}  [{states.label(d.state, d.flow)}]"]
    prev = t0
    for e in d.journal:
        at = e.at if e.at.tzinfo else e.at.replace(tzinfo=UTC)
        label = states.label(e.state_to, d.flow) if e.state_to else e.event
        lines.append(f"  {at:%H:%M:%S}  +{(at - t0).total_seconds():6.1f} s  (Δ {(at - prev).total_seconds():5.1f} s)"
                     f"  {label:<34} {e.message[:110]}")
        prev = at
    return "\n".join(lines)


def demo(state: Path, port: int, config_path: Path, *, timeout: float = 600) -> int:
    from flows.config import load_config
    from flows.dossier import service, states
    from flows.dossier.db import session_scope
    from simulators.signer import AirflowClient, answer_all

    layout = Layout(state.resolve())
    os.environ.setdefault("DEMAT_STATE", str(layout.state))  # the simulated officials find their tokens there
    proc = None
    if not _running(layout):
        proc = _start_platform(layout, port, config_path)
    try:
        _wait_ready(layout, port, proc, timeout=300)
        config = load_config(layout.config)
        secrets_ = json.loads(layout.secrets_file.read_text())
        db_url = _database_url(layout)
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        drops = samples(config, stamp)
        t0 = datetime.now(UTC)
        for d in drops:
            d.drop(layout.inbox)
            log(f"Déposé : {d.label} -> {d.collectivite}/{d.flow}/{d.name}")
        officials = sorted(config.parapheur_users())
        clients = [AirflowClient(f"http://127.0.0.1:{port}", u, secrets_["passwords"][u]) for u in officials]
        pending = {d.sha256: d for d in drops}
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for client in clients:
                for run_id, option in answer_pending(client, answer_all):
                    log(f"{client.username} : {option} ({run_id})")
            with session_scope(db_url) as session:
                for sha in pending:
                    dossier = service.by_sha(session, sha)
                    if dossier is not None:
                        found[sha] = dossier.id
                done = {sha for sha, did in found.items()
                        if states.is_final(service.get(session, did).state)}
            if done >= set(pending):
                break
            time.sleep(2)
        ok = True
        print()
        with session_scope(db_url) as session:
            for sha, d in pending.items():
                print(f"== {d.label} (attendu : {states.label(d.expected, d.flow)})")
                if sha not in found:
                    print("  jamais pris en charge")
                    ok = False
                    continue
                dossier = service.get(session, found[sha])
                print(timeline(session, dossier.id, t0))
                if dossier.state != d.expected:
                    ok = False
                    print(f"  !! état final {dossier.state}, attendu {d.expected}")
                print()
        log("Démonstration réussie." if ok else "Démonstration en échec : voir ci-dessus.")
        return 0 if ok else 1
    finally:
        if proc is not None:
            log("Arrêt de la plateforme démarrée pour la démonstration")
            stop_launcher(proc, grace=90)
