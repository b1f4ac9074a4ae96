"""The scale-out deployment on a real Docker engine, without any image registry (issue 19).

The images come from Debian packages and PyPI only (deploy/images/build.py: mmdebstrap + docker
import for the base, then demat's image, PostgreSQL and Redis on it; cached between runs), and
docker-compose.yml + docker-compose.debian.yml run the whole cluster: PostgreSQL, Redis, the
simulators, airflow-init, api-server, scheduler, dag-processor, triggerer and two Celery workers.

The test starts its own `dockerd` (data root /var/lib/demat-docker, its own socket and pidfile) when
no engine answers, brings the cluster up in a throw-away compose project whose ports are published on
127.0.0.1 only, waits for every healthcheck, logs in to the API, drops 20 mixed dossiers (actes and
PES of both collectivités) into the inbox volume, kills one Celery worker container mid-batch
(`docker kill`), carries every dossier to "archive" as the officials would (REST API), checks from
the counterparts' ledgers that nothing was sent twice and nothing lost, restarts the cluster and
checks that demat's database and the ledgers survived (volumes), then removes containers, network
and volumes, and stops the dockerd it started. The images stay, as the build cache.

Runs when DEMAT_DOCKER_TESTS=1 (not yet in `make test`: it passed once, its reliability over several runs
is not measured). Needs root, docker.io, docker-compose and mmdebstrap (make test-deps); skips, saying so,
otherwise.
Cold run (base image and requirements layer built): see docs/deployment.md; warm: the images are reused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REFERENCE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = ("postgres", "redis", "simulators", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker-1", "airflow-worker-2")
N_DOSSIERS = 20
UP_TIMEOUT = float(os.environ.get("DEMAT_DOCKER_UP_TIMEOUT", "900"))
CARRY_TIMEOUT = float(os.environ.get("DEMAT_DOCKER_CARRY_TIMEOUT", "1500"))
ADMIN = "admin"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"demat_images_{name}", ROOT / "deploy" / "images" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_tools() -> None:
    if os.environ.get("DEMAT_DOCKER_TESTS") != "1":
        pytest.skip("test du déploiement Docker non demandé (DEMAT_DOCKER_TESTS=1 pour le lancer) : il a réussi une "
                    "seule fois (14 min à chaud, ~24 min à froid) ; il n'entrera dans `make test` qu'une fois sa "
                    "fiabilité mesurée sur plusieurs passages (issue 19)")
    missing = [name for name in ("dockerd", "docker", "docker-compose", "mmdebstrap", "git") if not shutil.which(name)]
    if missing:
        pytest.skip("outils absents : " + ", ".join(missing) +
                    " — apt-get install -y docker.io docker-compose mmdebstrap (make test-deps)")
    if os.geteuid() != 0:
        pytest.skip("dockerd et mmdebstrap demandent root : test de déploiement Docker non lancé")


def _ledger_counts(project) -> dict[str, dict[str, int]]:
    """counterpart -> {file name: receptions} from each simulator's ledger.sqlite (in the state volume)."""
    script = ("import json, sqlite3, pathlib\n"
              "out = {}\n"
              "for p in sorted(pathlib.Path('/opt/demat/state/simulators').glob('*/ledger.sqlite')):\n"
              "    db = sqlite3.connect(f'file:{p}?mode=ro', uri=True)\n"
              "    out[p.parent.name] = dict(db.execute('SELECT name, COUNT(*) FROM receptions GROUP BY name'))\n"
              "print(json.dumps(out))\n")
    return json.loads(project.exec("simulators", "python", "-c", script))


def _drop(project, coll: str, flow: str, name: str, data: bytes) -> None:
    """Written as the airflow user under a dot name, then renamed: the watcher sees complete files only."""
    folder = f"/opt/demat/state/inbox/{coll}/{flow}"
    project.exec("airflow-triggerer", "sh", "-c", 'mkdir -p "$1" && cat > "$1/.$2.part" && mv "$1/.$2.part" "$1/$2"',
                 "sh", folder, name, input=data, user="50000")


def _dossiers(tag: str) -> list[tuple[str, str, str, bytes]]:
    """N_DOSSIERS (collectivité slug, flow, file name, content): actes and PES, both collectivités."""
    from flows.actes.generate import generate_acte_zip
    from flows.config import load_config
    from flows.helios.generate import generate_pes

    config = load_config(ROOT / "flows" / "config" / "demo.yaml")
    out = []
    for i in range(N_DOSSIERS):
        coll = config.collectivites[(i // 2) % len(config.collectivites)]
        if i % 2 == 0:
            data = generate_acte_zip(collectivite=coll, numero=f"{tag}{i:03d}", nature="DE", matiere="5.2",
                                     objet=f"Délibération conteneurs {tag} {i}")
            out.append((coll.slug, "actes", f"acte-{tag}-{i}.zip", data))
        else:
            data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                codbud=coll.helios.codbud, nomfic=f"PES_{tag}_{i:03d}", seed=i)
            out.append((coll.slug, "helios", f"pes-{tag}-{i}.xml", data))
    return out


def _signers(project):
    from flows.config import load_config
    from simulators.signer import AirflowClient

    stored = json.loads(project.exec("airflow-triggerer", "cat", "/opt/demat/state/secrets.json"))
    config = load_config(ROOT / "flows" / "config" / "demo.yaml")
    users = sorted({u for c in config.collectivites for o in c.officials for u in o.users})
    return [AirflowClient(project.base_url, u, stored["passwords"][u]) for u in users]


@pytest.fixture(scope="module")
def cluster():
    _require_tools()
    build, clusterlib = _load("build"), _load("cluster")
    engine = clusterlib.Engine()
    engine.start()
    project = None
    saved = os.environ.get("DOCKER_HOST")
    try:
        if "DOCKER_HOST" in engine.env:  # build.py calls `docker` with the process environment
            os.environ["DOCKER_HOST"] = engine.env["DOCKER_HOST"]
        t0 = time.monotonic()
        figures = build.build_all(REFERENCE if REFERENCE.is_dir() else None, log=lambda m: print(m, flush=True))
        print(f"\n[docker] images en {time.monotonic() - t0:.0f} s : {json.dumps(figures)}", flush=True)
        project = clusterlib.Project(engine, {**build.compose_env(), "DEMAT_DEBIAN_IMAGE": build.DEMAT_IMAGE}, {
            # faster pick-up for the test; a killed worker's tasks come back after these timeouts
            "DEMAT_COLLECT_SECONDS": "5", "DEMAT_INBOX_MIN_AGE": "1.0", "DEMAT_INBOX_POLL": "1.0",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
        }, admin=ADMIN)
        yield project
    finally:
        left = project.teardown() if project is not None else {}
        engine.stop()
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved
        assert not left, f"restes du projet compose : {left}"
        assert engine.proc is None or engine.proc.returncode is not None, "le dockerd démarré par le test tourne encore"


@pytest.mark.timeout(int(os.environ.get("DEMAT_DOCKER_TIMEOUT", "5400")))
def test_cluster_carries_dossiers_through_celery_workers_in_containers(cluster):
    project = cluster
    t_up = time.monotonic()
    project.up(UP_TIMEOUT)
    ready = project.wait_healthy(UP_TIMEOUT)
    print(f"[docker] cluster prêt en {time.monotonic() - t_up:.0f} s (santé en {ready:.0f} s après up)", flush=True)

    # every published port is on the loopback only
    for service in LONG_RUNNING:
        ports = project.inspect(service)["NetworkSettings"]["Ports"] or {}
        for bindings in ports.values():
            for b in bindings or []:
                assert b["HostIp"] == "127.0.0.1", (service, b)
    # the Debian-built images are the ones running
    assert project.inspect("airflow-worker-1")["Config"]["Image"].endswith("-debian")
    assert project.inspect("postgres")["Config"]["Image"].startswith("demat-postgres")

    # log in (FAB administrator of the env file); a wrong password is refused
    r = requests.post(f"{project.base_url}/auth/token", json={"username": ADMIN, "password": project.admin_password},
                      timeout=30)
    assert r.status_code in (200, 201) and r.json().get("access_token"), r.text[:300]
    bad = requests.post(f"{project.base_url}/auth/token", json={"username": ADMIN, "password": "faux-" + project.admin_password},
                        timeout=30)
    assert bad.status_code in (401, 403), bad.status_code

    # 20 mixed dossiers into the inbox volume
    tag = "D" + time.strftime("%H%M%S")
    docs = _dossiers(tag)
    import hashlib

    shas = {hashlib.sha256(d[3]).hexdigest(): d for d in docs}
    for coll, flow, name, data in docs:
        _drop(project, coll, flow, name, data)

    from flows.dossier.states import is_final
    from simulators.signer import answer_all

    signers = _signers(project)
    killed = None
    states: dict[str, str] = {}
    deadline = time.monotonic() + CARRY_TIMEOUT
    while time.monotonic() < deadline:
        for s in signers:
            try:
                answer_all(s)
            except requests.RequestException as exc:
                print(f"[docker] API : {type(exc).__name__}, nouvel essai", flush=True)
        rows = project.psql("SELECT sha256, state FROM dossier")
        states = {sha: state for sha, state in rows if sha in shas}
        final = [s for s in states.values() if is_final(s)]
        moving = [s for s in states.values() if s not in ("recu",)]
        if killed is None and len(moving) >= 3 and len(final) < N_DOSSIERS:
            killed = project.container("airflow-worker-1")
            project.engine.run("docker", "kill", killed)
            print(f"[docker] worker 1 tué en plein lot ({len(final)}/{N_DOSSIERS} finals, états {sorted(set(states.values()))})",
                  flush=True)
        if len(states) == N_DOSSIERS and len(final) == N_DOSSIERS:
            break
        time.sleep(3)
    assert killed is not None, "le worker n'a pas été tué en plein lot"
    assert len(states) == N_DOSSIERS, f"dossiers perdus : {N_DOSSIERS - len(states)} jamais enregistrés"
    assert all(s == "archive" for s in states.values()), (
        f"pas tous archivés après {CARRY_TIMEOUT:.0f} s : {sorted(states.values())}\n{project.logs('airflow-worker-2', 40)}")
    assert project.inspect("airflow-worker-1")["State"]["Running"] is False  # the killed worker stayed down

    # nothing sent twice, nothing lost: every transmission reached its counterpart exactly once
    rows = project.psql("SELECT sha256, flow, transmission_name, archive_id FROM dossier")
    facts = {r[0]: r[1:] for r in rows if r[0] in shas}
    ledgers = _ledger_counts(project)
    for sha, (flow, transmission, archive_id) in facts.items():
        counterpart = "prefecture" if flow == "actes" else "dgfip"
        assert transmission and archive_id, (sha[:8], flow, transmission, archive_id)
        assert ledgers[counterpart].get(transmission) == 1, (
            f"{transmission} reçu {ledgers[counterpart].get(transmission, 0)} fois par {counterpart}")
    duplicates = {c: {n: k for n, k in names.items() if k > 1} for c, names in ledgers.items()}
    assert not any(duplicates.values()), f"envois en double : {duplicates}"
    assert sum(ledgers.get("sae", {}).values()) >= N_DOSSIERS, ledgers.get("sae")

    # restart: the state lives in the volumes
    before = sorted(project.psql("SELECT id, state, transmission_name, archive_id FROM dossier"))
    project.compose("down", "--timeout", "30", timeout=300)
    assert not project.compose("ps", "-q").stdout.split()
    t_up = time.monotonic()
    project.up(UP_TIMEOUT)
    project.wait_healthy(UP_TIMEOUT)
    print(f"[docker] redémarrage prêt en {time.monotonic() - t_up:.0f} s", flush=True)
    after = sorted(project.psql("SELECT id, state, transmission_name, archive_id FROM dossier"))
    assert after == before and len(after) >= N_DOSSIERS
    assert _ledger_counts(project) == ledgers
    r = requests.post(f"{project.base_url}/auth/token", json={"username": ADMIN, "password": project.admin_password},
                      timeout=30)
    assert r.status_code in (200, 201), r.text[:300]
