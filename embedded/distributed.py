"""The distributed path without Docker: Airflow on CeleryExecutor, PostgreSQL and Redis from Debian.

    python -m embedded.distributed run --state DIR [--port 8080] [--workers 2]
    python -m embedded.distributed init      # inside the compose image (airflow-init service)

`run` starts, each in its own process group: PostgreSQL (Debian's server, run as a system user
since PostgreSQL refuses root), Redis (no persistence, loopback), the simulators, then
`airflow scheduler`, `dag-processor`, `triggerer`, `api-server` and N `airflow celery worker`
with distinct Celery hostnames. It is what `tests/e2e/test_celery.py` drives, and the same
topology as `docker-compose.yml` on one machine.

`init` is the compose deployment's one-shot initialisation (after `airflow db migrate`): demat's
database and schema, the state folders and demo PKI, and the Airflow Connections of the
counterparts read from the simulators' endpoints.json (host keys pinned). It never prints secrets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from embedded.platform import (
    DEMO_SIMULATOR_ARGS,
    PRIVATE_UMASK,
    REPO,
    VENV_BIN,
    Layout,
    _kill_tree,
    _secret_store,
    _write_passwords,
    airflow_env,
    api_ready,
    log,
    platform_users,
    prepare_state,
    read_endpoints,
)
from embedded.postgres import EmbeddedPostgres, free_port

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
CONNECTIONS = {"prefecture": "demat_prefecture", "dgfip": "demat_dgfip", "sae": "demat_sae"}


def worker_hostname() -> str:
    """`[core] hostname_callable` of the Celery workers: the worker's Celery name, so that a task
    instance's `hostname` says which worker ran it (several workers may share one machine)."""
    return os.environ.get("DEMAT_WORKER_NAME") or socket.getfqdn()


# -- Debian's PostgreSQL and Redis ------------------------------------------------------------------
def debian_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<v>/bin holding initdb and pg_ctl (package `postgresql`)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    found = [p for p in found if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return found[-1] if found else None


def redis_server_bin() -> str | None:
    """redis-server from Debian's `redis-server` package."""
    return shutil.which("redis-server") or (str(Path("/usr/bin/redis-server")) if Path("/usr/bin/redis-server").exists() else None)


class DebianPostgres(EmbeddedPostgres):
    """EmbeddedPostgres (same layout, generated password, loopback only) on Debian's binaries."""

    def __init__(self, root: Path, port: int, bin_dir: Path | None = None):
        super().__init__(root, port=port)
        self.bin_dir = bin_dir or debian_pg_bin()
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL de Debian absent (apt-get install -y postgresql)")

    def _run(self, exe: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        return subprocess.run([str(self.bin_dir / exe), *args], check=check, capture_output=True, text=True,
                              env=env, timeout=timeout, cwd="/", **self._as_server())

    def _open_binaries(self) -> None:
        """Debian's binaries are readable by every user already."""

    def stop(self) -> None:
        """Fast shutdown; immediate, then SIGKILL, for a server that does not go in time."""
        if not self.initialised():
            return
        pids = self.server_pids()
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False, timeout=60)
        if any(psutil.pid_exists(p) for p in pids):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "10", "stop", check=False,
                      timeout=30)
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)

    def server_pids(self) -> list[int]:
        pidfile = self.data / "postmaster.pid"
        try:
            main = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return []
        try:
            proc = psutil.Process(main)
            return [main, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []


@dataclass
class Redis:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        exe = redis_server_bin()
        if exe is None:
            raise RuntimeError("redis-server absent (apt-get install -y redis-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        logfile = (self.root / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--protected-mode", "yes", "--daemonize", "no"],
            stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server s'est arrêté : voir {self.root / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"redis-server ne répond pas sur 127.0.0.1:{self.port}")

    def stop(self) -> None:
        _kill_tree(self.proc, signal.SIGTERM, 10)


# -- environment -----------------------------------------------------------------------------------
def celery_env(env: dict[str, str], *, broker_url: str, result_backend: str, concurrency: int = 2) -> dict[str, str]:
    """An airflow_env() turned to CeleryExecutor."""
    out = dict(env)
    out.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
        # a loaded 2-core machine answers the Execution API in more than the default 5 s
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": env.get("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30"),
    })
    return out


def worker_env(env: dict[str, str], name: str, log_port: int) -> dict[str, str]:
    out = dict(env)
    out.update({
        "DEMAT_WORKER_NAME": name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "embedded.distributed.worker_hostname",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        # the hostname callable lives in this repo: importable even without `pip install -e .`
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    })
    return out


def result_backend_url(pg: EmbeddedPostgres, database: str = "airflow") -> str:
    return "db+" + pg.url(database, driver="postgresql")


# -- the cluster -------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """PostgreSQL + Redis + simulators + Airflow components + N Celery workers, one process group each."""

    state: Path
    port: int = field(default_factory=free_port)
    config_source: Path = REPO / "flows" / "config" / "demo.yaml"
    sim_args: tuple[str, ...] = ("--delay", "0.5", "--later-delay", "2")
    extra_env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 2
    layout: Layout = field(init=False)
    pg: DebianPostgres = field(init=False)
    redis: Redis = field(init=False)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = Path(self.state).resolve()
        self.layout = Layout(self.state)
        self.pg = DebianPostgres(self.state / "postgres", port=free_port())
        self.redis = Redis(self.state / "redis")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets(self) -> dict:
        return json.loads(self.layout.secrets_file.read_text())

    @property
    def database_url(self) -> str:
        return self.pg.url("demat")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        logfile = (self.state / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=logfile, stderr=subprocess.STDOUT,
                                start_new_session=True, umask=PRIVATE_UMASK)
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.state / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start(self, workers: int = 2, timeout: float = 240) -> Cluster:
        t0 = time.monotonic()
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        prepare_state(self.layout, self.config_source)
        secrets_ = _secret_store(self.layout)  # the logins come from the configuration
        self.pg.start()
        self.pg.ensure_database("airflow")
        self.redis.start()
        base = airflow_env(self.layout, self.pg, secrets_, self.port, {})
        base.update(self.extra_env)
        self._spawn("simulators", [sys.executable, "-m", "simulators", "--state", str(self.state), "--config",
                                   str(self.layout.config), *DEMO_SIMULATOR_ARGS, *self.sim_args], base)
        endpoints = self.layout.sims / "endpoints.json"
        deadline = time.monotonic() + 60
        while not endpoints.exists():
            if self.procs["simulators"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("les simulateurs n'ont pas démarré :\n" + self.log_tail("simulators"))
            time.sleep(0.2)
        # Connections come from the metadata database (written by `init`, as in the compose
        # deployment), not from AIRFLOW_CONN_* variables.
        self.env = celery_env(base, broker_url=self.redis.url, result_backend=result_backend_url(self.pg),
                              concurrency=self.concurrency)
        _write_passwords(self.layout, secrets_)
        airflow = str(VENV_BIN / "airflow")
        migrated = subprocess.run([airflow, "db", "migrate"], env=self.env, cwd=REPO, capture_output=True, text=True)
        if migrated.returncode != 0:
            raise RuntimeError("airflow db migrate a échoué :\n" + migrated.stderr[-3000:])
        init_env = {**self.env, "DEMAT_ENDPOINTS": str(endpoints)}
        inited = subprocess.run([sys.executable, "-m", "embedded.distributed", "init"], env=init_env, cwd=REPO,
                                capture_output=True, text=True)
        if inited.returncode != 0:
            raise RuntimeError("init a échoué :\n" + inited.stdout[-2000:] + inited.stderr[-3000:])
        # The API server first: the workers' task supervisors call its Execution API from their
        # first task on, and seven Airflow processes importing at once starve 2 cores.
        self._spawn("api-server", [airflow, "api-server"], self.env)
        self._wait(lambda: api_ready(self.port), t0, timeout, "api-server")
        for name in COMPONENTS:
            if name != "api-server":
                self._spawn(name, [airflow, name], self.env)
        for i in range(1, workers + 1):
            self.start_worker(i)
        self._wait(lambda: self.workers_ready(workers), t0, timeout, "worker1")
        log(f"cluster Celery prêt en {time.monotonic() - t0:.0f} s sur {self.base_url}")
        return self

    def _wait(self, ready, t0: float, timeout: float, name: str) -> None:
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"composants arrêtés {dead} ou délai dépassé ({timeout:.0f} s) :\n" +
                                   "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in (dead or [name])))
            time.sleep(1)

    def workers_ready(self, workers: int) -> bool:
        """Each worker has logged Celery's `ready.` line."""
        return all("ready." in self.log_tail(f"worker{i}", 200_000) for i in range(1, workers + 1))

    def worker_name(self, i: int) -> str:
        return f"worker{i}@{socket.gethostname()}"

    def start_worker(self, i: int) -> subprocess.Popen:
        name = self.worker_name(i)
        env = worker_env(self.env, name, free_port())
        return self._spawn(f"worker{i}", [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", name,
                                          "--concurrency", str(self.concurrency),
                                          "--pid", str(self.state / f"worker{i}.pid")], env)

    def stop_worker(self, i: int) -> None:
        _kill_tree(self.procs.pop(f"worker{i}", None), signal.SIGTERM, 30)

    def pids(self) -> list[int]:
        out = []
        for proc in self.procs.values():
            try:
                p = psutil.Process(proc.pid)
                out += [p.pid, *(c.pid for c in p.children(recursive=True))]
            except psutil.NoSuchProcess:
                continue
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            out.append(self.redis.proc.pid)
        return out + self.pg.server_pids()

    def stop(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        workers = [self.procs.pop(n) for n in list(self.procs) if n.startswith("worker")]
        components = [self.procs.pop(n) for n in COMPONENTS if n in self.procs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            # warm shutdown of every worker at once (running tasks finish or are handed back),
            # then the Airflow components together
            list(pool.map(lambda p: _kill_tree(p, signal.SIGTERM, 30), workers))
            list(pool.map(lambda p: _kill_tree(p, signal.SIGTERM, 20), components))
        for name in list(self.procs):
            _kill_tree(self.procs.pop(name), signal.SIGTERM, 10)
        for p in psutil.process_iter(["pid"]):  # task supervisors that escaped their group
            try:
                if p.pid != os.getpid() and p.environ().get("DEMAT_STATE") == str(self.state):
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.redis.stop()
        self.pg.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- init (compose's airflow-init, and the cluster above) ------------------------------------------------
def ensure_database(url: str) -> None:
    """CREATE DATABASE for the URL's database if missing (connecting to `postgres` with the same login)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first()
            if exists is None:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def connection_payloads(endpoints: dict, host_override: str | None = None) -> dict[str, dict]:
    """Airflow Connections (conn_id -> fields) for the counterparts, host keys pinned."""
    out = {}
    for name, ep in endpoints.items():
        if name not in CONNECTIONS:
            continue
        if not ep.get("host_key"):
            raise ValueError(f"point d'accès {name} sans clé d'hôte : refusé")
        out[CONNECTIONS[name]] = {
            "conn_type": "sftp", "host": host_override or ep["host"], "port": int(ep["port"]),
            "login": ep["username"],
            "extra": {"key_file": ep["key_path"], "host_key": ep["host_key"],
                      "upload_dir": ep.get("upload_dir", "depot"), "reply_dir": ep.get("reply_dir", "retour")},
        }
    return out


def write_connections(payloads: dict[str, dict]) -> None:
    """Create or replace the Connections in Airflow's metadata database."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        for conn_id, fields_ in payloads.items():
            existing = session.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(Connection(conn_id=conn_id, conn_type=fields_["conn_type"], host=fields_["host"],
                                   port=fields_["port"], login=fields_["login"], extra=json.dumps(fields_["extra"])))


# Agents, officials and VISA respondents log in through Airflow but use demat's pages and API only
# (issue 14): their FAB role gives no Dag, run, task, log, XCom, HITL, event-log, asset, pool or admin
# permission. What it keeps: the plugin list (Airflow's navigation shows demat's Parapheur and
# Dossiers entries from GET /api/v2/plugins) and their own profile and password.
DEMAT_FAB_ROLE = "Demat"
DEMAT_FAB_PERMISSIONS = [
    ("can_read", "Plugins"),
    ("can_read", "My Password"), ("can_edit", "My Password"),
    ("can_read", "My Profile"), ("can_edit", "My Profile"),
]
FAB_ROLES = {"admin": "Admin", "op": "Op", "user": DEMAT_FAB_ROLE, "viewer": DEMAT_FAB_ROLE}
OLD_FAB_ROLES = ({"Viewer"}, {"User"})  # what ensure_fab_users gave before issue 14


def ensure_fab_users(layout: Layout) -> list[str]:
    """Create the FAB users of the configuration (agents, officials, VISA respondents, operators),
    demat's restricted role, and demat's service identity (Op, random password nobody knows: it never
    logs in, its tokens are minted inside the API server by DematFabAuthManager).

    The compose deployment runs Airflow's FAB auth manager: its users live in the metadata
    database, not in a file as with the simple auth manager. Passwords are generated once into the
    state's secrets.json (0600), never printed nor passed on a command line. Existing users are
    left as they are (an operator may have changed their password or role), except that a
    configuration user still holding the Viewer or User role given by an older demat moves to the
    restricted role. Returns the users created or moved.
    """
    import secrets as _secrets

    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    from demat_airflow.auth_manager import service_user
    from flows.config import load_config

    config = load_config(layout.config)
    emails = {**config.emails, **{u: a for c in config.collectivites for u, a in c.emails.items()}}
    passwords = _secret_store(layout)["passwords"]
    created = []
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.bulk_sync_roles([{"role": DEMAT_FAB_ROLE, "perms": DEMAT_FAB_PERMISSIONS}])
        restricted = sm.find_role(DEMAT_FAB_ROLE)
        for user, (role, label) in platform_users(layout).items():
            existing = sm.find_user(username=user)
            if existing:
                if FAB_ROLES[role] == DEMAT_FAB_ROLE and {r.name for r in existing.roles} in OLD_FAB_ROLES:
                    existing.roles = [restricted]
                    sm.update_user(existing)
                    created.append(user)
                continue
            first, _, last = label.partition(",")
            added = sm.add_user(user, user, (last or first).strip()[:60] or user, emails.get(user, f"{user}@demat.invalid"),
                                sm.find_role(FAB_ROLES[role]), passwords[user])
            if not added:
                raise RuntimeError(f"utilisateur {user} non créé dans Airflow (FAB)")
            created.append(user)
        service = service_user()
        if not sm.find_user(username=service):
            if not sm.add_user(service, "demat", "identité de service", f"{service}@demat.invalid", sm.find_role("Op"),
                               _secrets.token_urlsafe(48)):
                raise RuntimeError(f"identité de service {service} non créée dans Airflow (FAB)")
            created.append(service)
    return created


def init(argv: list[str] | None = None) -> int:
    """Idempotent: demat's database and schema, state folders, demo PKI, counterpart Connections."""
    from flows.dossier.db import create_schema
    from flows.settings import Settings

    settings = Settings.from_env()
    url = os.environ.get("DEMAT_DATABASE_URL")
    if not url:
        print("DEMAT_DATABASE_URL n'est pas défini", file=sys.stderr)
        return 2
    ensure_database(url)
    create_schema(url)
    log("base demat : schéma à jour")
    layout = Layout(settings.state_dir)
    config_source = settings.config_path
    prepare_state(layout, config_source)
    log(f"état : {layout.state} (boîtes de dépôt, PKI de démonstration si absente)")
    if "FabAuthManager" in os.environ.get("AIRFLOW__CORE__AUTH_MANAGER", ""):
        created = ensure_fab_users(layout)
        log(f"utilisateurs Airflow (FAB) créés : {', '.join(created) or 'aucun (déjà présents)'} ; "
            f"mots de passe dans {layout.secrets_file}")
    endpoints_file = os.environ.get("DEMAT_ENDPOINTS", str(layout.sims / "endpoints.json"))
    if endpoints_file and Path(endpoints_file).exists():
        endpoints = read_endpoints(layout) if Path(endpoints_file) == layout.sims / "endpoints.json" else \
            json.loads(Path(endpoints_file).read_text())
        endpoints = endpoints.get("counterparts", endpoints)
        payloads = connection_payloads(endpoints, os.environ.get("DEMAT_SIMULATORS_HOST") or None)
        write_connections(payloads)
        log("connexions " + ", ".join(f"{c} → {p['host']}:{p['port']}" for c, p in payloads.items()) +
            " (clés d'hôte épinglées)")
    else:
        log("pas de endpoints.json des simulateurs : connexions demat_* laissées telles quelles")
    return 0


def run(state: Path, port: int, workers: int) -> int:
    os.umask(PRIVATE_UMASK)  # the state (store with the tiers' IBANs, inbox, logs) stays owner-only
    cluster = Cluster(state, port=port)
    stopping = {"flag": False}

    def _stop(signum, frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        cluster.start(workers=workers)
        log(f"Interface : {cluster.base_url} — comptes dans {cluster.layout.secrets_file} — Ctrl-C pour arrêter")
        while not stopping["flag"]:
            dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
            if dead:
                log(f"arrêt inattendu : {dead} (journaux dans {cluster.state / 'logs'})")
                return 1
            time.sleep(1)
        return 0
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded.distributed")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="PostgreSQL + Redis (Debian) + Airflow sur CeleryExecutor, au premier plan")
    p.add_argument("--state", type=Path, default=REPO / ".demat" / "celery")  # git-ignored
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=2)
    sub.add_parser("init", help="initialisation idempotente (service airflow-init du déploiement compose)")
    args = parser.parse_args(argv)
    if args.command == "init":
        return init()
    return run(args.state, args.port, args.workers)


if __name__ == "__main__":
    sys.exit(main())
