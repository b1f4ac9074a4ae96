"""`make run`: PostgreSQL, the simulators and `airflow standalone`, in the foreground.

Everything lives in one state folder (default ./.demat): Airflow home, PostgreSQL data, the
artefact store, the inboxes, the demo PKI. A second start reuses it. Ctrl-C (or SIGTERM) stops
every process we started, including the ones `airflow standalone` leaves behind on SIGTERM.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from embedded.postgres import EmbeddedPostgres, free_port
from embedded.watchdog import Watchdog, become_subreaper

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

AUTH_MANAGER = "demat_airflow.auth_manager.DematAuthManager"
# demat's service identity (role op, no password, not a login): answers Airflow's HITL for the official
# demat checked; its short-lived token is minted inside the API server (plugins/demat_airflow/ui/hitl.py)
SERVICE_USER = "demat-service"

# Airflow's UI greys out (but still draws) the Dags and Assets links of a user without access to them:
# hide them then. An operator's links are enabled, so unaffected. ([api] theme's globalCss, Airflow 3.1+;
# !important: Chakra puts global CSS in its first @layer, below the buttons' own styles)
_GREYED = ("[disabled]", "[data-disabled]", "[aria-disabled=true]")
NAV_THEME = {"globalCss": {", ".join(f'[data-testid="nav-{n}-link"]{g}' for n in ("dags", "assets") for g in _GREYED):
                           {"display": "none !important"}}}

PLATFORM_USERS = {  # Airflow user -> (simple auth manager role, label); the others come from the config
    "admin": ("admin", "administrateur de la plateforme"),
    "operateur": ("op", "opérateur (voit et agit sur tout)"),
}


def platform_users(layout: Layout) -> dict[str, tuple[str, str]]:
    """Every demo login: the platform's own, then each collectivité's agents and parapheur respondents."""
    from flows.config import load_config

    users = {**PLATFORM_USERS, **load_config(layout.config).airflow_users()}
    if SERVICE_USER in users:  # a login with the service identity's name would answer for any official
        raise ValueError(f"{layout.config} : l'utilisateur « {SERVICE_USER} » est réservé à l'identité de service de "
                         "demat ; renommez ce compte dans la configuration.")
    return users


def log(msg: str) -> None:
    print(f"[demat] {msg}", flush=True)


@dataclass
class Layout:
    state: Path

    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    @property
    def pg_root(self) -> Path:
        return self.state / "postgres"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def inbox(self) -> Path:
        return self.state / "inbox"

    @property
    def store(self) -> Path:
        return self.state / "store"

    @property
    def sims(self) -> Path:
        return self.state / "simulators"

    @property
    def mails(self) -> Path:
        """The SMTP sink's folder: every alert mail the platform sends, as .eml files (new/)."""
        return self.state / "mails"

    @property
    def config(self) -> Path:
        return self.state / "config.yaml"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.json"

    @property
    def run_file(self) -> Path:
        return self.state / "run.json"


def _secret_store(layout: Layout) -> dict:
    """Generated once, kept in the state folder (0600), never printed except the demo logins."""
    if layout.secrets_file.exists():
        data = json.loads(layout.secrets_file.read_text())
    else:
        data = {}
    changed = False
    for key in ("jwt_secret", "api_secret", "fernet_key"):
        if key not in data:
            if key == "fernet_key":
                from cryptography.fernet import Fernet

                data[key] = Fernet.generate_key().decode()
            else:
                data[key] = secrets.token_urlsafe(64)
            changed = True
    passwords = data.setdefault("passwords", {})
    for user in platform_users(layout):
        if user not in passwords:
            passwords[user] = secrets.token_urlsafe(12)
            changed = True
    if changed:
        layout.state.mkdir(parents=True, exist_ok=True)
        tmp = layout.secrets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, layout.secrets_file)
    return data


PRIVATE_UMASK = 0o077  # every file the platform's processes create: owner only


def secure_state(root: Path) -> int:
    """The state folder holds the tiers' IBANs (store), the inboxes, logs, mails and secrets: owner
    only. Strips group and other bits from `root` and everything under it (a state written by an
    older version, or by hand); symbolic links are neither changed nor followed. Returns the count.
    (When we are root, embedded/postgres.py then lets its server's system user traverse by group.)"""
    import stat

    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = 0

    def fix(path: str) -> None:
        nonlocal changed
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode) or not mode & 0o077:
            return
        os.chmod(path, mode & 0o700, follow_symlinks=False)
        changed += 1

    fix(str(root))
    for folder, dirs, files in os.walk(root):  # never descends into a symlinked folder
        for name in (*dirs, *files):
            fix(os.path.join(folder, name))
    return changed


def prepare_state(layout: Layout, config_source: Path) -> None:
    from flows.config import load_config
    from flows.pipeline.inbox import ensure_layout
    from flows.signature.pki import create_demo_pki

    fixed = secure_state(layout.state)
    if fixed:
        log(f"dossier d'état : droits réduits au seul propriétaire sur {fixed} fichier(s) ou dossier(s)")
    for d in (layout.state, layout.airflow_home, layout.store, layout.inbox, layout.pki, layout.sims):
        d.mkdir(parents=True, exist_ok=True)
    if not layout.config.exists():
        shutil.copyfile(config_source, layout.config)
    config = load_config(layout.config)  # validated on load: a clear French error stops here
    ensure_layout(layout.inbox, [c.slug for c in config.collectivites])
    officials = [(o.certificate, o.name, o.role) for c in config.collectivites for o in c.officials if o.certificate]
    from flows.pipeline.signing import LEGACY_ENV, provision_demo_supports  # docs/signature.md

    supports = None if os.environ.get(LEGACY_ENV) == "1" else provision_demo_supports(
        layout.state, layout.pki, config, seal_holder="Syndicat mixte demat (démonstration)")
    create_demo_pki(layout.pki, [] if supports else officials)  # officials' PKCS#12: fallback without SoftHSM2
    from flows.dossier.timestamp import LocalTsa

    LocalTsa.create(layout.state / "tsa")  # the journal's time-stamping authority (demat_watch stamps)


def airflow_env(layout: Layout, pg: EmbeddedPostgres, secrets_: dict, port: int, endpoints: dict,
                smtp: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(layout.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("DEMAT_PARALLELISM", "6"),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "6",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": secrets_["fernet_key"],
        # issue 14: Airflow's own UI and API for operators only; agents and officials use demat's pages
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
        "AIRFLOW__API__THEME": json.dumps(NAV_THEME),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{u}:{role}" for u, (role, _) in platform_users(layout).items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(layout.airflow_home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url("airflow"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets_["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": secrets_["api_secret"],
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        # a scheduler restarted by the watchdog adopts the dead one's task instances within 30 s, and
        # a task whose process vanished is failed (then retried) after 2 min instead of 5
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "120",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        # DAG files only change with a deployment, not with the configuration: re-parsing each
        # every 30 s (the default) cost about 0.08 CPU-s/s, a quarter of the idle platform
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": os.environ.get("DEMAT_DAG_REPARSE_SECONDS", "300"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # task logs hold dossier names and amounts: owner only (Airflow chmods them 0664/0775 otherwise)
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "AIRFLOW__CORE__TEST_CONNECTION": "Disabled",
        "GX_ANALYTICS_ENABLED": "false",
        "DEMAT_STATE": str(layout.state),
        "DEMAT_CONFIG": str(layout.config),
        "DEMAT_DATABASE_URL": pg.url("demat"),
        # the nightly retention's way to Airflow's own database: Airflow 3 replaces
        # AIRFLOW__DATABASE__SQL_ALCHEMY_CONN with "airflow-db-not-allowed:///" in task processes
        "DEMAT_AIRFLOW_DATABASE_URL": pg.url("airflow"),
        "DEMAT_STORE": str(layout.store),
        "DEMAT_INBOX": str(layout.inbox),
        "DEMAT_PKI": str(layout.pki),
        "DEMAT_OPERATORS": "admin,operateur",
        "DEMAT_SERVICE_USER": SERVICE_USER,
        "DEMAT_RUN_TOKEN": RUN_TOKEN,
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "NO_PROXY": "127.0.0.1,localhost",
    })
    for name, ep in endpoints.items():
        env[f"AIRFLOW_CONN_DEMAT_{name.upper()}"] = json.dumps({
            "conn_type": "sftp", "host": ep["host"], "port": ep["port"], "login": ep["username"],
            "extra": {"key_file": ep["key_path"], "host_key": ep["host_key"],
                      "upload_dir": ep.get("upload_dir", "depot"), "reply_dir": ep.get("reply_dir", "retour")},
        })
    if smtp:  # the simulators' SMTP sink: plain SMTP on loopback, one attempt per send (demat retries)
        env["AIRFLOW_CONN_DEMAT_SMTP"] = json.dumps({
            "conn_type": "smtp", "host": smtp["host"], "port": smtp["port"],
            "extra": {"from_email": "demat <alertes@demat.localhost>", "disable_ssl": True, "disable_tls": True,
                      "timeout": 10, "retry_limit": 0},
        })
    return env


def _write_passwords(layout: Layout, secrets_: dict) -> None:
    path = layout.airflow_home / "passwords.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(secrets_["passwords"]))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# the demo actes carry the classification of 2024-01-15: the préfecture answers a classification
# request (demat_classification, also run once when a platform starts) with the same date, else
# every demo acte would be refused for an outdated classification
DEMO_SIMULATOR_ARGS = ("--set", "prefecture.classification_date=2024-01-15")


def _start_simulators(layout: Layout, env: dict) -> subprocess.Popen:
    endpoints = layout.sims / "endpoints.json"
    endpoints.unlink(missing_ok=True)
    logfile = (layout.state / "simulators.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--state", str(layout.state), "--config", str(layout.config),
         *DEMO_SIMULATOR_ARGS, "--mail-dir", str(layout.mails),
         # answer delays (defaults 2 s and 30 s); the benchmarks set them to 0, "answering at once"
         *[arg for flag, var in (("--delay", "DEMAT_SIM_DELAY"), ("--later-delay", "DEMAT_SIM_LATER_DELAY"))
           if os.environ.get(var) for arg in (flag, os.environ[var])]],
        cwd=REPO, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not endpoints.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"Les simulateurs n'ont pas démarré : voir {layout.state / 'simulators.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError("Les simulateurs ne répondent pas après 60 s")
        time.sleep(0.2)
    return proc


def read_endpoints(layout: Layout) -> dict:
    """The SFTP counterparts (the SMTP sink, listed beside them, is read by read_smtp)."""
    raw = json.loads((layout.sims / "endpoints.json").read_text())
    raw = raw.get("counterparts", raw)
    return {name: ep for name, ep in raw.items() if ep.get("kind", "sftp") == "sftp"}


def read_smtp(layout: Layout) -> dict | None:
    raw = json.loads((layout.sims / "endpoints.json").read_text())
    smtp = raw.get("smtp")
    return smtp if isinstance(smtp, dict) and smtp.get("kind") == "smtp" else None


def api_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:  # noqa: S310  # nosec B310 - fixed loopback URL
            return r.status == 200
    except Exception:
        return False


def _kill_tree(proc: subprocess.Popen | None, sig_first: int = signal.SIGINT, grace: float = 25) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        os.killpg(proc.pid, sig_first)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [c for c in children if c.is_running()]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for c in alive:
            try:
                c.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        gone, alive = psutil.wait_procs(alive, timeout=5)
        if not alive and proc.poll() is not None:
            break


RUN_TOKEN = secrets.token_hex(8)  # marks every process this launcher starts


def _kill_leftovers(port: int) -> None:
    """Any process still carrying this run's token (a task supervisor that escaped the group), or
    our API server (it renames itself and setproctitle overwrites its environment)."""
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get("DEMAT_RUN_TOKEN") == RUN_TOKEN or (
                "api_server" in " ".join(p.cmdline()) and f"port:{port}" in " ".join(p.cmdline())
            ):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def banner(layout: Layout, port: int, secrets_: dict) -> str:
    from flows.config import load_config

    config = load_config(layout.config)
    lines = ["", "=" * 78, "demat est prêt / demat is up", "", f"  Interface Airflow : http://127.0.0.1:{port}", "",
             "  Comptes de démonstration (générés pour cet état, dans " f"{layout.secrets_file}) :"]
    on_terminal = sys.stdout.isatty()  # never copy passwords into a log file
    for user, (_, label) in platform_users(layout).items():
        shown = secrets_["passwords"][user] if on_terminal else "(voir secrets.json)"
        lines.append(f"    {user:<20} {shown:<20} {label}")
    tokens = layout.state / "softhsm" / "tokens.json"
    if tokens.exists():  # the officials sign on their own (SoftHSM2) token, with demat-signer
        supports = json.loads(tokens.read_text())
        lines += ["", "  Supports de signature des élus (SoftHSM2) et leur code PIN :"]
        for user, t in supports["users"].items():
            pin = Path(t["pin_file"]).read_text().strip() if on_terminal else f"(voir {t['pin_file']})"
            lines.append(f"    {user:<20} {t['label']:<32} PIN {pin}")
        lines.append(f"    signer : SOFTHSM2_CONF={supports['conf']} demat-signer sign --url http://127.0.0.1:{port} "
                     "--username <compte> --token-label <support>")
    lines += ["", "  Dossiers d'entrée (déposez-y vos fichiers) :"]
    for c in config.collectivites:
        for flow in c.flows:
            lines.append(f"    {c.name:<40} {flow:<7} {layout.inbox / c.slug / flow}")
    lines += ["", "  Refusés : sous-dossier « rejetes/ » de chaque dossier d'entrée, avec l'explication.",
              f"  Courriels d'alerte (puits SMTP local) : {layout.mails / 'new'}",
              "  Démonstration : `make demo` dans un autre terminal.  Arrêt : Ctrl-C.", "=" * 78, ""]
    return "\n".join(lines)


def run(state: Path, port: int, config_source: Path, pg_port: int | None = None) -> int:
    os.umask(PRIVATE_UMASK)  # inherited by PostgreSQL, the simulators and every Airflow process
    layout = Layout(state.resolve())
    t0 = time.monotonic()
    layout.state.mkdir(parents=True, exist_ok=True)
    if layout.run_file.exists():
        info = json.loads(layout.run_file.read_text())
        if psutil.pid_exists(info.get("pid", -1)) and info.get("pid") != os.getpid():
            try:
                if "embedded" in " ".join(psutil.Process(info["pid"]).cmdline()):
                    log(f"demat tourne déjà (pid {info['pid']}) sur ce dossier d'état : {layout.state}")
                    return 1
            except psutil.NoSuchProcess:
                pass
    prepare_state(layout, config_source)
    secrets_ = _secret_store(layout)
    port_file = layout.state / "postgres.port"
    if pg_port is None and port_file.exists():
        pg_port = int(port_file.read_text())
    pg = EmbeddedPostgres(layout.pg_root, port=pg_port or free_port())
    port_file.write_text(str(pg.port))
    stopping = {"flag": False}

    def _stop(signum, frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sims = standalone = watchdog = clamd = None
    try:
        log(f"PostgreSQL (embarqué) sur 127.0.0.1:{pg.port}")
        pg.start()
        pg.ensure_database("airflow", idle_in_transaction_timeout="2min")
        pg.ensure_database("demat")
        from flows.dossier.db import create_schema

        create_schema(pg.url("demat"))
        layout.run_file.write_text(json.dumps({"pid": os.getpid(), "pg_port": pg.port, "api_port": port}))
        from flows.antivirus import start_embedded_clamd

        clamd = start_embedded_clamd(layout.state, log)  # sets DEMAT_CLAMD_SOCKET when it runs
        base_env = airflow_env(layout, pg, secrets_, port, {})
        log("Simulateurs (préfecture, DGFiP, SAE) sur SFTP en boucle locale")
        sims = _start_simulators(layout, base_env)
        env = airflow_env(layout, pg, secrets_, port, read_endpoints(layout), read_smtp(layout))
        _write_passwords(layout, secrets_)
        log("Migration de la base Airflow")
        migrated = subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, cwd=REPO,
                                  capture_output=True, text=True)
        if migrated.returncode != 0:
            log("La migration de la base Airflow a échoué :\n" + migrated.stderr[-3000:])
            return 1
        log("airflow standalone (scheduler, dag-processor, triggerer, api-server)")
        aflog = (layout.state / "airflow-standalone.log").open("ab")
        # Airflow's `standalone`, but keeping demat's auth manager (it forces SimpleAuthManager)
        standalone = subprocess.Popen([sys.executable, "-m", "embedded.standalone"], env=env, cwd=REPO,
                                      stdout=aflog, stderr=subprocess.STDOUT, start_new_session=True)
        become_subreaper()  # a dead scheduler's orphans come back to us (see embedded.watchdog)
        watchdog = Watchdog(VENV_BIN / "airflow", env, REPO, layout.state, port, log=log)
        shown = False
        while not stopping["flag"]:
            if standalone.poll() is not None:
                log(f"airflow standalone s'est arrêté (code {standalone.returncode}) : voir airflow-standalone.log")
                return 1
            if sims.poll() is not None:
                log("Les simulateurs se sont arrêtés : voir simulators.log")
                return 1
            if not shown and api_ready(port):
                shown = True
                print(banner(layout, port, secrets_), flush=True)
                log(f"Prêt en {time.monotonic() - t0:.0f} s")
                (layout.state / "ready").write_text(str(time.time()))
            if shown:  # from then on every component must stay alive
                watchdog.check(os.getpid())
            time.sleep(0.5)
        return 0
    finally:
        log("Arrêt : Airflow, simulateurs, PostgreSQL")
        (layout.state / "ready").unlink(missing_ok=True)
        _kill_tree(standalone)
        if watchdog is not None:
            watchdog.stop()
        _kill_tree(sims, signal.SIGTERM, 10)
        _kill_tree(clamd, signal.SIGTERM, 10)
        _kill_leftovers(port)
        pg.stop()
        layout.run_file.unlink(missing_ok=True)
        log("Arrêté.")
