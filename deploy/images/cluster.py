"""A Docker engine and a throw-away compose project of demat's cluster (stdlib only).

Used by tests/integration/test_docker_cluster.py and bench/bench_images.py:

    engine = Engine(); engine.start()           # the engine that answers, else our own dockerd
    project = Project(engine, images_env)       # temp dir: the two compose files + a fresh demat.env
    project.compose("up", "-d"); project.wait_healthy(900)
    ...
    project.teardown(); engine.stop()           # containers, network, volumes; the dockerd we started

Our dockerd keeps its data under /var/lib/demat-docker (so the images survive as a cache), its
socket and pidfile under /run/demat-docker; it never touches a system engine's files.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OWN_SOCKET = "/run/demat-docker/docker.sock"
OWN_DATA_ROOT = "/var/lib/demat-docker"
LONG_RUNNING = ("postgres", "redis", "simulators", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker-1", "airflow-worker-2")
AIRFLOW_UID = "50000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """A Docker engine: the one already answering, or a dockerd started (and stopped) here."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ)
        self.log = Path(tempfile.mkdtemp(prefix="demat-dockerd-")) / "dockerd.log"

    def answers(self) -> bool:
        try:
            return subprocess.run(["docker", "info"], env=self.env, capture_output=True, timeout=60).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self, timeout: float = 90) -> None:
        if self.answers():
            return
        self.env["DOCKER_HOST"] = f"unix://{OWN_SOCKET}"
        if self.answers():  # ours, left by an interrupted run: reuse it (not stopped at the end)
            return
        Path(OWN_SOCKET).parent.mkdir(parents=True, exist_ok=True)
        Path(OWN_DATA_ROOT).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", OWN_DATA_ROOT, "--exec-root", "/run/demat-docker/exec",
             "--pidfile", "/run/demat-docker/dockerd.pid", "-H", f"unix://{OWN_SOCKET}"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd s'est arrêté (code {self.proc.returncode}) : {self.log.read_text()[-2000:]}")
            if self.answers():
                return
            time.sleep(1)
        raise RuntimeError(f"dockerd ne répond pas après {timeout:.0f} s : {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def run(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])}… a échoué ({proc.returncode}) : "
                               f"{(proc.stdout + proc.stderr).decode(errors='replace')[-3000:]}")
        return proc


class Project:
    """A compose project in a temp dir: docker-compose.yml + docker-compose.debian.yml, fresh secrets."""

    def __init__(self, engine: Engine, images_env: dict[str, str], extra_env_file: dict[str, str] | None = None,
                 name: str | None = None, admin: str = "admin"):
        self.engine = engine
        self.dir = Path(tempfile.mkdtemp(prefix="demat-compose-"))
        self.name = name or f"demattest{os.getpid()}"
        for file in ("docker-compose.yml", "docker-compose.debian.yml"):
            shutil.copy(REPO / file, self.dir / file)
        (self.dir / "deploy").mkdir()
        self.admin = admin
        self.admin_password = secrets.token_urlsafe(24)
        self.pg_password = secrets.token_urlsafe(24)
        values = {
            "POSTGRES_USER": "airflow", "POSTGRES_PASSWORD": self.pg_password, "POSTGRES_DB": "airflow",
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
            "_AIRFLOW_WWW_USER_USERNAME": admin, "_AIRFLOW_WWW_USER_PASSWORD": self.admin_password,
            **(extra_env_file or {}),
        }
        env_file = self.dir / "deploy" / "demat.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.ui_port = free_port()
        self.env = {**engine.env, **images_env, "COMPOSE_PROJECT_NAME": self.name,
                    "DEMAT_UI_PORT": str(self.ui_port), "DEMAT_SIM_PORT_PREFECTURE": str(free_port()),
                    "DEMAT_SIM_PORT_DGFIP": str(free_port()), "DEMAT_SIM_PORT_SAE": str(free_port()),
                    "AIRFLOW_UID": AIRFLOW_UID, "COMPOSE_HTTP_TIMEOUT": "300"}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker-compose", "-p", self.name, "-f", "docker-compose.yml",
                               "-f", "docker-compose.debian.yml", *args],
                              cwd=self.dir, env=self.env, capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)} a échoué ({proc.returncode}) : "
                               f"{(proc.stdout + proc.stderr).decode(errors='replace')[-4000:]}")
        return proc

    def up(self, timeout: float) -> None:
        """`up -d`, again while a dependency is only not healthy *yet*: docker-compose 1.x gives up as
        soon as a healthcheck fails once, even inside its retries, which a loaded machine causes."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.compose("up", "-d", timeout=max(60.0, deadline - time.monotonic()), check=False)
            out = (proc.stdout + proc.stderr).decode(errors="replace")
            if proc.returncode == 0:
                return
            if "is unhealthy" not in out or time.monotonic() > deadline:
                raise RuntimeError(f"docker-compose up a échoué ({proc.returncode}) : {out[-4000:]}")
            time.sleep(15)

    def container(self, service: str) -> str:
        out = self.engine.run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}",
                              "--filter", f"label=com.docker.compose.service={service}").stdout.decode().split()
        if not out:
            raise LookupError(f"aucun conteneur pour {service}")
        return out[0]

    def inspect(self, service: str) -> dict:
        return json.loads(self.engine.run("docker", "inspect", self.container(service)).stdout)[0]

    def exec(self, service: str, *cmd: str, input: bytes | None = None, env: dict | None = None,
             user: str | None = None, timeout: float = 120) -> str:
        extra = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        if user:
            extra += ["-u", user]
        return self.engine.run("docker", "exec", "-i", *extra, self.container(service), *cmd,
                               input=input, timeout=timeout).stdout.decode()

    def psql(self, sql: str, database: str = "demat") -> list[list[str]]:
        out = self.exec("postgres", "psql", "-h", "/var/run/postgresql", "-U", "airflow", "-d", database,
                        "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", sql, env={"PGPASSWORD": self.pg_password})
        return [line.split("\t") for line in out.splitlines() if line]

    def logs(self, service: str, tail: int = 60) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), service, check=False).stdout.decode(errors="replace")

    def health(self) -> dict[str, str]:
        out = {}
        for service in (*LONG_RUNNING, "airflow-init"):
            try:
                state = self.inspect(service)["State"]
            except LookupError:
                out[service] = "absent"
                continue
            if service == "airflow-init":
                out[service] = f"{state['Status']}:{state['ExitCode']}"
            else:
                out[service] = state.get("Health", {}).get("Status", state["Status"])
        return out

    def wait_healthy(self, timeout: float) -> float:
        """Seconds until every long-running service is healthy and airflow-init exited 0."""
        t0 = time.monotonic()
        last: dict[str, str] = {}
        while time.monotonic() - t0 < timeout:
            last = self.health()
            init = last["airflow-init"]
            if init.startswith("exited:") and init != "exited:0":
                raise RuntimeError(f"airflow-init a échoué ({init}) : {self.logs('airflow-init')}")
            if init == "exited:0" and all(last[s] == "healthy" for s in LONG_RUNNING):
                return time.monotonic() - t0
            time.sleep(5)
        raise RuntimeError(f"services pas prêts après {timeout:.0f} s : {last}\n" +
                           "\n".join(self.logs(s, 30) for s, v in last.items() if v != "healthy"))

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.name}"
        return {kind: self.engine.run("docker", *cmd, "--filter", label, check=False).stdout.decode().split()
                for kind, cmd in (("conteneurs", ("ps", "-aq")), ("volumes", ("volume", "ls", "-q")),
                                  ("réseaux", ("network", "ls", "-q")))}

    def teardown(self) -> dict[str, list[str]]:
        """Containers, network and volumes of the project; returns what is left (nothing, normally)."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        left = self.leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)
        return {k: v for k, v in left.items() if v}
