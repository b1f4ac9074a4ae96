"""SFTP client for the counterparts (préfecture, DGFiP, SAE), with a pinned host key.

Why this shape:
- the server's host key is pinned (one OpenSSH public key line from the Connection); an unknown
  or different key is refused, never learnt (paramiko RejectPolicy, no system known_hosts);
- uploads are atomic and idempotent: written under `.<name>.part`, size checked, then renamed
  with posix-rename; a retry after a crash completes the rename, and an identical file already
  in place means "already transmitted" (returns False) so a document never leaves twice;
- network faults raise `TransportUnavailable` (retry with backoff), everything else a permanent
  `TransportError` subclass with a French message.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
from paramiko.sftp import CMD_EXTENDED

from flows.transport.base import (
    DEFAULT_MAX_READ,
    Payload,
    check_name,
    is_visible,
    join,
    part_name,
    sha256_stream,
)
from flows.transport.errors import (
    AuthenticationRefused,
    HostKeyMismatch,
    PermanentTransportError,
    RemoteConflict,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTooLarge,
    TransportError,
    TransportUnavailable,
)

log = logging.getLogger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint, what an operator compares with `ssh-keygen -lf`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def parse_host_key(line: str) -> paramiko.PKey:
    """Read an OpenSSH public key line ("ssh-ed25519 AAAA... comment").

    A known_hosts line ("[host]:port ssh-ed25519 AAAA...") is accepted too: leading host
    patterns are skipped.
    """
    fields = (line or "").strip().split()
    while fields and not (fields[0].startswith("ssh-") or fields[0].startswith("ecdsa-")):
        fields.pop(0)
    if len(fields) < 2:
        raise PermanentTransportError(
            "clé d'hôte épinglée illisible : attendu une ligne de clé publique OpenSSH "
            "(« ssh-ed25519 AAAA... »)"
        )
    key_type, blob = fields[0], fields[1]
    try:
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError, paramiko.SSHException, paramiko.UnknownKeyType) as exc:
        raise PermanentTransportError(
            f"clé d'hôte épinglée invalide (type « {key_type} ») : {exc.__class__.__name__}"
        ) from exc
    return key


class _PinnedKeyPolicy(paramiko.RejectPolicy):
    """Refuse any host whose key is not pinned, with a message an operator understands."""

    def __init__(self, host: str, port: int, pinned: paramiko.PKey):
        self._where = f"{host}:{port}"
        self._pinned = pinned

    def missing_host_key(self, client, hostname, key):  # noqa: ARG002 - paramiko signature
        raise HostKeyMismatch(
            f"le serveur SFTP {self._where} présente une clé d'hôte {key.get_name()} "
            f"({fingerprint(key)}) qui n'est pas la clé épinglée ({self._pinned.get_name()} "
            f"{fingerprint(self._pinned)}) : connexion refusée, rien n'a été envoyé. Si le "
            "changement de clé est annoncé par la contrepartie, mettez à jour la clé épinglée de "
            "la connexion ; sinon, signalez une possible interception."
        )


def _is_transient_oserror(exc: OSError) -> bool:
    return exc.errno is not None and exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM)


class SftpEndpoint:
    """One SFTP account at a counterpart. Use as a context manager (connects on enter).

    Paths are POSIX paths as the server sees them (in a chroot: "/depot", "/retour").
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        key_path: str | Path,
        host_key: str,
        timeout: float = 10,
        *,
        passphrase: str | None = None,
    ):
        self.host = host
        self.port = int(port)
        self.username = username
        self.key_path = Path(key_path)
        self.timeout = timeout
        self._passphrase = passphrase
        self._pinned = parse_host_key(host_key)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"SftpEndpoint({self.username}@{self.host}:{self.port})"

    def __enter__(self) -> SftpEndpoint:
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def connect(self) -> None:
        if self._sftp is not None:
            return
        try:
            pkey = paramiko.PKey.from_path(self.key_path, self._passphrase)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise PermanentTransportError(
                f"clé privée du client SFTP illisible ({self.key_path}) : {exc.__class__.__name__}"
            ) from exc
        client = paramiko.SSHClient()
        # Only the pinned key is known: no system known_hosts, nothing is ever learnt.
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        client.get_host_keys().add(name, self._pinned.get_name(), self._pinned)
        client.set_missing_host_key_policy(_PinnedKeyPolicy(self.host, self.port, self._pinned))
        try:
            client.connect(
                hostname=self.host,
                port=self.port,
                username=self.username,
                pkey=pkey,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.timeout)
        except HostKeyMismatch:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"la clé d'hôte du serveur SFTP {self.host}:{self.port} a changé : reçue "
                f"{exc.key.get_name()} {fingerprint(exc.key)}, épinglée {exc.expected_key.get_name()} "
                f"{fingerprint(exc.expected_key)}. Connexion refusée, rien n'a été envoyé. Si le "
                "changement est annoncé par la contrepartie, mettez à jour la clé épinglée ; sinon, "
                "signalez une possible interception."
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthenticationRefused(
                f"le serveur SFTP {self.host}:{self.port} refuse la clé du compte « {self.username} » : "
                "vérifiez le nom d'utilisateur et que la clé publique du client est autorisée."
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            client.close()
            raise TransportUnavailable(
                f"serveur SFTP {self.host}:{self.port} injoignable ({exc.__class__.__name__}: {exc}) : "
                "nouvel essai plus tard."
            ) from exc
        self._client, self._sftp = client, sftp
        log.info("connecté à %s@%s:%s (clé d'hôte %s)", self.username, self.host, self.port, fingerprint(self._pinned))

    def close(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        for thing in (sftp, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001, S110 - closing a dead link must not mask the real error
                    pass

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The live SFTP session; reconnects if a previous fault closed it."""
        if self._sftp is None:
            self.connect()
        assert self._sftp is not None
        return self._sftp

    def _link_alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return bool(transport and transport.is_active())

    @contextmanager
    def _op(self, what: str, path: str) -> Iterator[None]:
        """Translate paramiko/OS errors into transient or permanent TransportErrors."""
        try:
            yield
        except TransportError:
            raise
        except FileNotFoundError as exc:
            raise RemoteNotFound(f"{what} : « {path} » n'existe pas sur {self.host}:{self.port}") from exc
        except PermissionError as exc:
            raise RemotePermissionDenied(
                f"{what} : accès refusé à « {path} » sur {self.host}:{self.port}"
            ) from exc
        except (paramiko.SSHException, EOFError, TimeoutError, ConnectionError) as exc:
            self.close()
            raise TransportUnavailable(
                f"{what} « {path} » : connexion perdue avec {self.host}:{self.port} "
                f"({exc.__class__.__name__}) : nouvel essai plus tard."
            ) from exc
        except OSError as exc:
            if _is_transient_oserror(exc) or not self._link_alive():
                self.close()
                raise TransportUnavailable(
                    f"{what} « {path} » : erreur réseau avec {self.host}:{self.port} ({exc}) : nouvel essai plus tard."
                ) from exc
            raise PermanentTransportError(
                f"{what} « {path} » refusé par le serveur {self.host}:{self.port} : {exc}"
            ) from exc

    # -- primitives ---------------------------------------------------------------------------

    def _stat(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self.sftp.stat(path)
        except FileNotFoundError:
            return None

    def _remote_sha256(self, path: str) -> str:
        with self.sftp.open(path, "rb") as fh:
            fh.prefetch()
            return sha256_stream(fh)

    def _fsync(self, fh: paramiko.SFTPFile) -> None:
        """fsync@openssh.com (OpenSSH, asyncssh): the bytes are on the server's disk before the rename.

        paramiko has no public call for it; a server without the extension answers "unsupported"
        (an OSError without errno), which is not an error for us.
        """
        fh.flush()
        try:
            self.sftp._request(CMD_EXTENDED, "fsync@openssh.com", fh.handle)
        except OSError as exc:
            if exc.errno is not None:
                raise
            log.debug("le serveur %s:%s ne propose pas fsync@openssh.com", self.host, self.port)

    def _same(self, path: str, attrs: paramiko.SFTPAttributes, payload: Payload) -> bool:
        return attrs.st_size == payload.size and self._remote_sha256(path) == payload.sha256

    # -- public API ---------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        with self._op("vérification", path):
            return self._stat(path) is not None

    def mkdir_p(self, path: str) -> None:
        with self._op("création du dossier", path):
            current = "/" if path.startswith("/") else ""
            for part in [p for p in path.split("/") if p]:
                current = posixpath.join(current, part) if current else part
                attrs = self._stat(current)
                if attrs is None:
                    try:
                        self.sftp.mkdir(current)
                    except OSError:
                        if self._stat(current) is None:  # not a lost race: a real refusal
                            raise
                elif not stat.S_ISDIR(attrs.st_mode or 0):
                    raise PermanentTransportError(f"« {current} » existe déjà et n'est pas un dossier")

    def listdir(self, directory: str) -> list[str]:
        """Complete regular files only (no dot files, no .part uploads in flight), sorted."""
        with self._op("liste du dossier", directory):
            entries = self.sftp.listdir_attr(directory)
        return sorted(
            e.filename for e in entries if is_visible(e.filename) and stat.S_ISREG(e.st_mode or 0)
        )

    list = listdir  # name used in docs/architecture.md

    def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
        with self._op("lecture", path):
            attrs = self.sftp.stat(path)
            if attrs.st_size is not None and attrs.st_size > max_bytes:
                raise RemoteTooLarge(
                    f"« {path} » fait {attrs.st_size} octets, au-delà de la limite de {max_bytes} octets"
                )
            with self.sftp.open(path, "rb") as fh:
                fh.prefetch(attrs.st_size)
                data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise RemoteTooLarge(f"« {path} » dépasse la limite de {max_bytes} octets")
        return data

    def move(self, src: str, dst: str) -> bool:
        """Rename src to dst. True if moved now, False if it was already moved (src gone, dst there)."""
        with self._op("déplacement", f"{src} -> {dst}"):
            if self._stat(dst) is not None:
                if self._stat(src) is None:
                    return False
                raise RemoteConflict(f"déplacement de « {src} » impossible : « {dst} » existe déjà")
            try:
                self.sftp.posix_rename(src, dst)
            except FileNotFoundError:
                if self._stat(src) is None and self._stat(dst) is not None:
                    return False
                raise
        return True

    def upload_atomic(self, remote_dir: str, name: str, data: bytes | str | Path) -> bool:
        """Write `remote_dir/name` atomically. True if written now, False if already there (same
        size and sha256). Raises RemoteConflict if that name holds a different content."""
        check_name(name)
        payload = Payload(data)
        final = join(remote_dir, name)
        part = join(remote_dir, part_name(name))
        with self._op("dépôt", final):
            attrs = self._stat(final)
            if attrs is not None:
                if self._same(final, attrs, payload):
                    log.info("%s déjà présent sur %s:%s (même contenu) : rien à renvoyer", final, self.host, self.port)
                    return False
                raise RemoteConflict(
                    f"« {final} » existe déjà sur {self.host}:{self.port} avec un contenu différent "
                    f"({attrs.st_size} octets, attendu {payload.size}) : dépôt refusé pour ne rien écraser."
                )
            part_attrs = self._stat(part)
            if part_attrs is not None and self._same(part, part_attrs, payload):
                log.info("reprise : %s complet, seul le renommage manquait", part)
            else:
                with self.sftp.open(part, "wb") as fh:
                    fh.set_pipelined(True)
                    for chunk in payload.chunks():
                        fh.write(chunk)
                    self._fsync(fh)
                written = self.sftp.stat(part).st_size
                if written != payload.size:
                    raise TransportUnavailable(
                        f"dépôt de « {final} » incomplet ({written} octets sur {payload.size}) : nouvel essai plus tard."
                    )
            if self._stat(final) is not None:  # someone else won the race meanwhile
                attrs = self.sftp.stat(final)
                if self._same(final, attrs, payload):
                    return False
                raise RemoteConflict(f"« {final} » est apparu pendant le dépôt avec un contenu différent")
            self.sftp.posix_rename(part, final)
        log.info("déposé %s sur %s:%s (%d octets, sha256 %s)", final, self.host, self.port, payload.size, payload.sha256[:12])
        return True
