"""The SFTP endpoint interface over a local folder: unit tests and "file drop" connectors.

Same guarantees as SftpEndpoint: paths stay inside the root (a "../" or a symlink pointing out
is refused), uploads go through `.<name>.part` + fsync + atomic rename, identical re-uploads
return False, different content under the same name raises RemoteConflict.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from flows.transport.base import (
    DEFAULT_MAX_READ,
    Payload,
    check_name,
    is_visible,
    part_name,
    sha256_stream,
)
from flows.transport.errors import (
    PermanentTransportError,
    RemoteConflict,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTooLarge,
    TransportUnavailable,
)


class LocalEndpoint:
    """A folder seen as a remote root: "/depot" means <root>/depot."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise TransportUnavailable(f"dossier de dépôt {self.root} absent ou non monté : nouvel essai plus tard.")

    def __enter__(self) -> LocalEndpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def connect(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LocalEndpoint({self.root})"

    def _path(self, path: str) -> Path:
        """Map a remote path into the root, refusing anything that resolves outside it."""
        if "\x00" in path:
            raise RemotePermissionDenied(f"chemin refusé : « {path!r} »")
        candidate = (self.root / path.lstrip("/")).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise RemotePermissionDenied(f"chemin « {path} » hors du dossier racine : refusé")
        return candidate

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def mkdir_p(self, path: str) -> None:
        target = self._path(path)
        if target.exists() and not target.is_dir():
            raise PermanentTransportError(f"« {path} » existe déjà et n'est pas un dossier")
        target.mkdir(parents=True, exist_ok=True)

    def listdir(self, directory: str) -> list[str]:
        target = self._path(directory)
        try:
            entries = list(os.scandir(target))
        except FileNotFoundError as exc:
            raise RemoteNotFound(f"liste du dossier : « {directory} » n'existe pas") from exc
        return sorted(e.name for e in entries if is_visible(e.name) and e.is_file(follow_symlinks=False))

    list = listdir

    def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
        target = self._path(path)
        try:
            with target.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size > max_bytes:
                    raise RemoteTooLarge(f"« {path} » dépasse la limite de {max_bytes} octets")
                data = fh.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise RemoteNotFound(f"lecture : « {path} » n'existe pas") from exc
        if len(data) > max_bytes:
            raise RemoteTooLarge(f"« {path} » dépasse la limite de {max_bytes} octets")
        return data

    def move(self, src: str, dst: str) -> bool:
        s, d = self._path(src), self._path(dst)
        if d.exists():
            if not s.exists():
                return False
            raise RemoteConflict(f"déplacement de « {src} » impossible : « {dst} » existe déjà")
        try:
            os.rename(s, d)
        except FileNotFoundError as exc:
            if d.exists():
                return False
            raise RemoteNotFound(f"déplacement : « {src} » n'existe pas") from exc
        fsync_dir(d.parent)
        return True

    @staticmethod
    def _same(path: Path, payload: Payload) -> bool:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != payload.size:
            return False
        with path.open("rb") as fh:
            return sha256_stream(fh) == payload.sha256

    def upload_atomic(self, remote_dir: str, name: str, data: bytes | str | Path) -> bool:
        check_name(name)
        payload = Payload(data)
        folder = self._path(remote_dir)
        if not folder.is_dir():
            raise RemoteNotFound(f"dépôt : le dossier « {remote_dir} » n'existe pas")
        final, part = folder / name, folder / part_name(name)
        if final.exists():
            if self._same(final, payload):
                return False
            raise RemoteConflict(f"« {remote_dir}/{name} » existe déjà avec un contenu différent : dépôt refusé")
        with part.open("wb") as fh:
            for chunk in payload.chunks():
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if part.stat().st_size != payload.size:
            raise TransportUnavailable(f"dépôt de « {name} » incomplet : nouvel essai plus tard.")
        try:
            os.link(part, final)  # atomic and never overwrites
        except FileExistsError as exc:
            if self._same(final, payload):
                part.unlink(missing_ok=True)
                return False
            raise RemoteConflict(f"« {remote_dir}/{name} » est apparu pendant le dépôt avec un contenu différent") from exc
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.rename(part, final)  # file systems without hard links
        else:
            part.unlink(missing_ok=True)
        fsync_dir(folder)
        return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some file systems refuse a directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
