"""Content-addressed artefact store: a file is named by its sha256 and never modified.

The root is a local folder or any fsspec URL (object storage in production).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import fsspec


class ArtefactStore:
    def __init__(self, root: str | os.PathLike):
        self.root = str(root)
        self.fs, self.base = fsspec.core.url_to_fs(self.root)
        self.fs.makedirs(self.base, exist_ok=True)

    def _path(self, sha256: str) -> str:
        return f"{self.base.rstrip('/')}/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self._path(sha)
        if self.fs.exists(target):
            return sha
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, target)  # atomic on a local filesystem; single PUT on object storage
        return sha

    def put_file(self, path: str | os.PathLike) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        sha = h.hexdigest()
        target = self._path(sha)
        if not self.fs.exists(target):
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex}.tmp"
            self.fs.put_file(str(path), tmp)
            self.fs.mv(tmp, target)
        return sha

    def get(self, sha256: str) -> bytes:
        with self.fs.open(self._path(sha256), "rb") as fh:
            return fh.read()

    def exists(self, sha256: str) -> bool:
        return self.fs.exists(self._path(sha256))

    def local_path(self, sha256: str) -> Path | None:
        """The file's path when the store is local (for streaming validators)."""
        if self.fs.protocol in ("file", ("file", "local")) or "file" in (self.fs.protocol or ()):
            return Path(self._path(sha256))
        return None
