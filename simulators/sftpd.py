"""A real SFTP server (asyncssh) on loopback, playing a counterpart's gateway.

Choice: ONE SERVER PER COUNTERPART (préfecture, DGFiP, SAE), each with its own port and its
own ed25519 host key, as the real gateways are separate hosts; the pinned-key and outage tests
then act on one counterpart without touching the others. A server still accepts several
accounts (`Account(username, root, authorized_keys)`), each jailed in its own root.

- Authentication: public keys only, read from the account's authorized_keys file at every
  login (no passwords, no keyboard-interactive, no agent/X11/port forwarding, no shell, no scp).
- Chroot: asyncssh's SFTPServer virtual root; "../" collapses at the root; creating links is
  refused, so nothing inside the root can point outside it.
- posix-rename@openssh.com is served by asyncssh (used by the client's atomic uploads).
- Outage switches, checked at each new TCP connection in `switch_dir` (the counterpart root,
  outside the chroot so a client cannot remove them):
    DOWN  -> the connection is closed at once (the client sees the gateway refuse logins);
    HANG  -> the connection is accepted and never answered (the client times out).
- Runs as asyncio tasks (`await server.start()` / `await server.stop()`) or in a background
  thread with its own loop (`ServerThread`), with a clean shutdown either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import asyncssh

from simulators.keys import ensure_ed25519_key, fingerprint, public_key_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Account:
    username: str
    root: Path  # the chroot
    authorized_keys: Path


class _ChrootSFTPServer(asyncssh.SFTPServer):
    """SFTP jailed in the account's root; no link creation (a link could lead out of the jail)."""

    def __init__(self, chan: asyncssh.SSHServerChannel, *, accounts: dict[str, Account]):
        username = chan.get_extra_info("username")
        account = accounts.get(username)
        if account is None:  # cannot happen after auth, but never serve the real "/"
            raise asyncssh.SFTPPermissionDenied("compte inconnu")
        super().__init__(chan, chroot=str(account.root).encode())

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("création de liens interdite")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("création de liens interdite")


class _SSHServer(asyncssh.SSHServer):
    def __init__(self, accounts: dict[str, Account], name: str):
        self._accounts = accounts
        self._name = name
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        account = self._accounts.get(username)
        if account is not None and account.authorized_keys.exists() and self._conn is not None:
            self._conn.set_authorized_keys(str(account.authorized_keys))
        else:
            log.warning("[%s] connexion refusée pour le compte inconnu « %s »", self._name, username)
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False


class SftpServer:
    """One SFTP gateway. `port=0` picks a free port; read `.port` after start()."""

    def __init__(
        self,
        *,
        host_key: str | Path,
        accounts: Iterable[Account],
        host: str = "127.0.0.1",
        port: int = 0,
        switch_dir: str | Path | None = None,
        name: str = "sftp",
        login_timeout: float = 30,
    ):
        self.name = name
        self.host = host
        self._requested_port = port
        self.host_key_path = Path(host_key)
        ensure_ed25519_key(self.host_key_path, comment=f"{name}-host")
        self.accounts = {a.username: a for a in accounts}
        self.switch_dir = Path(switch_dir) if switch_dir else None
        self._login_timeout = login_timeout
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._hung: set[socket.socket] = set()
        self.port: int = 0

    @property
    def host_key_line(self) -> str:
        return public_key_line(self.host_key_path)

    def _switch(self, flag: str) -> bool:
        return self.switch_dir is not None and (self.switch_dir / flag).exists()

    async def start(self) -> None:
        for account in self.accounts.values():
            account.root.mkdir(parents=True, exist_ok=True)
        self._options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[str(self.host_key_path)],
            server_factory=partial(_SSHServer, self.accounts, self.name),
            sftp_factory=partial(_ChrootSFTPServer, accounts=self.accounts),
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=False,
            login_timeout=self._login_timeout,
            connect_timeout=self._login_timeout,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())
        log.info(
            "[%s] serveur SFTP à l'écoute sur %s:%d (clé d'hôte %s)",
            self.name, self.host, self.port, fingerprint(self.host_key_line),
        )

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            client, addr = await loop.sock_accept(self._sock)
            if self._switch("DOWN"):
                log.info("[%s] DOWN : connexion de %s fermée", self.name, addr)
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                continue
            if self._switch("HANG"):
                log.info("[%s] HANG : connexion de %s acceptée puis laissée sans réponse", self.name, addr)
                self._hung.add(client)
                continue
            task = loop.create_task(self._serve(client, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, client: socket.socket, addr) -> None:
        try:
            conn = await asyncssh.run_server(client, options=self._options)
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            log.info("[%s] session refusée pour %s : %s", self.name, addr, exc.__class__.__name__)
            client.close()
            return
        self._conns.add(conn)
        try:
            await conn.wait_closed()
        finally:
            self._conns.discard(conn)

    async def stop(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for conn in list(self._conns):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self._hung:
            sock.close()
        self._hung.clear()
        log.info("[%s] serveur SFTP arrêté", self.name)


class ServerThread:
    """Runs servers (and optional coroutines) in a private event loop in a daemon thread."""

    def __init__(self, servers: Iterable[SftpServer]):
        self.servers = list(servers)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sftp-simulators", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            for server in self.servers:
                self._loop.run_until_complete(server.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True))
        self._loop.close()

    def start(self, timeout: float = 10) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("les serveurs SFTP simulés n'ont pas démarré à temps")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
