"""The distributed path without Docker: CeleryExecutor with two workers, on Debian's PostgreSQL and Redis.

The test starts its own PostgreSQL (initdb/pg_ctl from /usr/lib/postgresql/*/bin, as a system
user) and Redis (loopback, no persistence) on free ports in a temp dir, the SFTP simulators, then
`airflow scheduler`, `dag-processor`, `triggerer`, `api-server` and two `airflow celery worker`
with distinct Celery hostnames (embedded/distributed.py). Dossiers of both flows are dropped into
the inboxes, approved through the REST API as the officials would, and must end "archive" in
demat's database on that PostgreSQL; the task instances must have run on both workers and only
on them. Every process started must be gone at the end.

Debian packages: postgresql, redis-server (the test skips, saying so, when they are absent).

The scaling figure (one worker vs two) is a benchmark, not a test: bench/bench_celery.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import requests

from embedded.distributed import Cluster, debian_pg_bin, redis_server_bin

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

START_TIMEOUT = 240  # the seven Airflow processes start in 60-200 s on 2 loaded cores
CARRY_TIMEOUT = float(os.environ.get("DEMAT_CELERY_CARRY", "240"))


def _require_debian_servers() -> None:
    missing = []
    if debian_pg_bin() is None:
        missing.append("postgresql (initdb/pg_ctl sous /usr/lib/postgresql/*/bin)")
    if redis_server_bin() is None:
        missing.append("redis-server")
    if missing:
        pytest.skip("paquets Debian absents : " + ", ".join(missing) +
                    " — apt-get install -y postgresql redis-server (make test-deps)")


def _cluster_processes(state: Path) -> list[psutil.Process]:
    """Every live process belonging to this cluster: by environment or by a path in its command line."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if str(state) in cmd or p.environ().get("DEMAT_STATE") == str(state):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


@pytest.fixture(scope="module")
def cluster():
    _require_debian_servers()
    # Not under pytest's basetemp: pytest (ours or a concurrent session) resets pytest-of-<user> to
    # 0700, and PostgreSQL runs as a system user that must traverse to its data folder.
    state = Path(tempfile.mkdtemp(prefix="demat-celery-"))
    c = Cluster(state, extra_env={"DEMAT_COLLECT_SECONDS": "5", "DEMAT_INBOX_MIN_AGE": "1.0",
                                  "DEMAT_INBOX_POLL": "1.0"})
    try:
        c.start(workers=2, timeout=START_TIMEOUT)
    except BaseException:
        c.stop()
        raise
    yield c
    started = [pid for pid in c.pids() if psutil.pid_exists(pid)]
    assert started, "the cluster reported no process"
    c.stop()
    time.sleep(1)
    alive = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    leftovers = _cluster_processes(state)
    assert not alive and not leftovers, (
        f"processes left behind: {alive} {[p.cmdline() for p in leftovers]}")
    shutil.rmtree(state, ignore_errors=True)


# -- helpers ---------------------------------------------------
def _drop(cluster: Cluster, coll: str, flow: str, name: str, data: bytes) -> str:
    folder = cluster.state / "inbox" / coll / flow
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    return hashlib.sha256(data).hexdigest()


def _config(cluster: Cluster):
    from flows.config import load_config

    return load_config(cluster.state / "config.yaml")


def _signers(cluster: Cluster, config):
    from simulators.signer import AirflowClient

    users = sorted({u for c in config.collectivites for o in c.officials for u in o.users})
    return [AirflowClient(cluster.base_url, u, cluster.secrets["passwords"][u]) for u in users]


def drop_dossiers(cluster: Cluster, n: int, tag: str) -> dict[str, float]:
    """n dossiers alternating acte / PES and the two collectivités; returns sha -> drop time."""
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    config = _config(cluster)
    dropped: dict[str, float] = {}
    for i in range(n):
        coll = config.collectivites[(i // 2) % len(config.collectivites)]
        if i % 2 == 0:
            data = generate_acte_zip(collectivite=coll, numero=f"{tag}{i:03d}", nature="DE", matiere="5.2",
                                     objet=f"Délibération distribuée {tag} {i}")
            sha = _drop(cluster, coll.slug, "actes", f"acte-{tag}-{i}.zip", data)
        else:
            data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                codbud=coll.helios.codbud, nomfic=f"PES_{tag}_{i:03d}", seed=i)
            sha = _drop(cluster, coll.slug, "helios", f"pes-{tag}-{i}.xml", data)
        dropped[sha] = time.monotonic()
    return dropped


def carry(cluster: Cluster, dropped: dict[str, float], timeout: float,
          verbose: bool = True) -> dict[str, tuple[str, str, float]]:
    """Approve as the officials until every dossier is final. Returns sha -> (id, state, seconds from drop)."""
    from flows.dossier import service, states
    from flows.dossier.db import session_scope
    from simulators.signer import answer_all

    signers = _signers(cluster, _config(cluster))
    deadline = time.monotonic() + timeout
    done: dict[str, tuple[str, str, float]] = {}
    where: dict[str, str] = {}
    while time.monotonic() < deadline:
        for s in signers:
            try:
                answer_all(s)
            except requests.RequestException as exc:  # a loaded API server: try again next round
                if verbose:
                    print(f"[celery] API : {type(exc).__name__}, nouvel essai", flush=True)
        with session_scope(cluster.database_url) as session:
            for sha, t0 in dropped.items():
                if sha in done:
                    continue
                d = service.by_sha(session, sha)
                state = d.state if d is not None else "absent"
                if verbose and where.get(sha) != state:
                    print(f"[celery] {time.monotonic() - t0:5.0f} s  {sha[:8]} → {state}", flush=True)
                where[sha] = state
                if d is not None and states.is_final(d.state):
                    done[sha] = (d.id, d.state, time.monotonic() - t0)
        if len(done) == len(dropped):
            return done
        time.sleep(1)
    raise AssertionError(f"dossiers not final after {timeout} s: { {k[:8]: v for k, v in where.items() if k not in done} }")


def task_instances(cluster: Cluster) -> list[dict]:
    from simulators.signer import AirflowClient

    admin = AirflowClient(cluster.base_url, "admin", cluster.secrets["passwords"]["admin"])
    out, offset = [], 0
    while True:
        page = admin.get("/dags/~/dagRuns/~/taskInstances", limit=100, offset=offset)
        out += page["task_instances"]
        offset += 100
        if offset >= page["total_entries"]:
            return out


# -- the test ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(int(os.environ.get("DEMAT_CELERY_TIMEOUT", "360")))  # start-up included
def test_both_flows_archived_through_two_celery_workers(cluster):
    from flows.dossier import service
    from flows.dossier.db import session_scope

    t0 = time.monotonic()
    dropped = drop_dossiers(cluster, 2, "C" + datetime.now(UTC).strftime("%H%M%S"))  # one acte, one PES
    done = carry(cluster, dropped, CARRY_TIMEOUT)
    elapsed = time.monotonic() - t0
    print(f"\n[celery] 2 dossiers (1 acte, 1 PES) archivés en {elapsed:.0f} s ; "
          f"médiane dépôt→final {statistics.median(v[2] for v in done.values()):.0f} s")

    expected = ["recu", "valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive"]
    with session_scope(cluster.database_url) as session:
        flows_seen = set()
        for _sha, (dossier_id, state, _t) in done.items():
            d = service.get(session, dossier_id)
            assert state == "archive", (d.flow, d.state, d.reason)
            assert [e.state_to for e in d.journal if e.state_to] == expected
            assert d.archive_id and d.transmission_name
            flows_seen.add(d.flow)
    assert flows_seen == {"actes", "helios"}
    # demat's database really is the Debian PostgreSQL of this cluster
    assert cluster.database_url.startswith("postgresql") and f":{cluster.pg.port}/demat" in cluster.database_url

    tis = task_instances(cluster)
    ran = [ti for ti in tis if ti.get("state") == "success"]
    assert ran, "no successful task instance"
    hosts = {ti.get("hostname") for ti in ran}
    workers = {cluster.worker_name(1), cluster.worker_name(2)}
    assert hosts <= workers, f"tasks ran outside the Celery workers: {hosts - workers}"
    assert hosts == workers, f"tasks ran on {hosts} only: both workers must take work"
    dossier_tasks = [ti for ti in ran if ti["dag_id"] in ("demat_acte", "demat_pes")]
    assert dossier_tasks, sorted({ti["dag_id"] for ti in ran})
    print("[celery] tâches par worker : " +
          ", ".join(f"{h}={sum(1 for ti in ran if ti.get('hostname') == h)}" for h in sorted(workers)))

    from simulators.signer import AirflowClient

    admin = AirflowClient(cluster.base_url, "admin", cluster.secrets["passwords"]["admin"])
    health = admin.get("/monitor/health")
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    dead = {n: p.returncode for n, p in cluster.procs.items() if p.poll() is not None}
    assert not dead, f"a component died: {dead}"
