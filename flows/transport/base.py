"""What every transport offers (SFTP, local folder), so callers and tests can swap them."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from flows.transport.errors import InvalidRemoteName

CHUNK = 64 * 1024
PART_SUFFIX = ".part"
DEFAULT_MAX_READ = 256 * 1024 * 1024  # above every upload cap seen (PES 128 MiB, @ctes 150 MiB)


@runtime_checkable
class Endpoint(Protocol):
    def upload_atomic(self, remote_dir: str, name: str, data: bytes | str | Path) -> bool: ...
    def listdir(self, directory: str) -> list[str]: ...
    def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ) -> bytes: ...
    def move(self, src: str, dst: str) -> bool: ...
    def exists(self, path: str) -> bool: ...
    def mkdir_p(self, path: str) -> None: ...


def check_name(name: str) -> str:
    """A final file name must stay in its folder and be visible to listdir (no dot, no .part)."""
    if (
        not name
        or len(name.encode("utf-8")) > 255
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or name.endswith(PART_SUFFIX)
    ):
        raise InvalidRemoteName(
            f"nom de fichier distant refusé : « {name} » (ni « / », ni « .. », ni point initial, ni suffixe .part)"
        )
    return name


def part_name(name: str) -> str:
    return f".{name}{PART_SUFFIX}"


def is_visible(name: str) -> bool:
    """Complete files only: hidden names and in-flight .part files are someone's upload in progress."""
    return not name.startswith(".") and not name.endswith(PART_SUFFIX)


def join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if directory else name


class Payload:
    """bytes or a local file, with size and sha256 computed once, read in chunks."""

    def __init__(self, data: bytes | str | Path):
        if isinstance(data, bytes | bytearray | memoryview):
            self._bytes: bytes | None = bytes(data)
            self._path: Path | None = None
            self.size = len(self._bytes)
            self.sha256 = hashlib.sha256(self._bytes).hexdigest()
        else:
            self._bytes = None
            self._path = Path(data)
            h = hashlib.sha256()
            size = 0
            with self._path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
            self.size = size
            self.sha256 = h.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        if self._bytes is not None:
            view = memoryview(self._bytes)
            for i in range(0, len(view), CHUNK):
                yield bytes(view[i : i + CHUNK])
            return
        assert self._path is not None
        with self._path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk


def sha256_stream(fh: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()
