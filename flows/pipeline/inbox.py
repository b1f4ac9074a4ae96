"""Watched inbox folders: find stable files, claim them atomically, explain rejections beside them.

Layout: <inbox>/<collectivité>/<flux>/ where agents drop files; <inbox>/<collectivité>/<flux>/rejetes/
holds refused files with a French explanation beside each. Claimed files move (rename, same
filesystem) into <work>/claimed/<collectivité>/<flux>/ so that two watchers never take the same file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

FLOWS = ("actes", "helios")
REJECTED = "rejetes"
IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp", ".ok", ".done", ".erreur.txt")
MARKER_SUFFIXES = (".ok", ".done")


@dataclass(frozen=True)
class Dropped:
    collectivite: str
    flow: str
    path: Path
    size: int
    mtime: float


def ensure_layout(inbox_root: Path, collectivites: list[str], flows: tuple[str, ...] = FLOWS) -> None:
    for slug in collectivites:
        for flow in flows:
            (inbox_root / slug / flow / REJECTED).mkdir(parents=True, exist_ok=True)


def _ignored(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(IGNORED_SUFFIXES)


def scan(inbox_root: Path) -> Iterator[Dropped]:
    """Every candidate file in every inbox (not claimed yet, not in the rejected folders)."""
    if not inbox_root.is_dir():
        return
    for coll_dir in sorted(p for p in inbox_root.iterdir() if p.is_dir()):
        for flow in FLOWS:
            flow_dir = coll_dir / flow
            if not flow_dir.is_dir():
                continue
            with os.scandir(flow_dir) as entries:
                for entry in entries:
                    if not entry.is_file(follow_symlinks=False) or _ignored(entry.name):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    yield Dropped(coll_dir.name, flow, Path(entry.path), st.st_size, st.st_mtime)


def has_marker(path: Path) -> bool:
    return any(path.with_name(path.name + suffix).exists() for suffix in MARKER_SUFFIXES)


def is_stable(item: Dropped, *, min_age: float, previous: tuple[int, float] | None = None,
              now: float | None = None) -> bool:
    """A file is taken when a marker file says it is complete, or when it has not changed for
    `min_age` seconds (and, when known, had the same size and mtime at the previous poll)."""
    if has_marker(item.path):
        return True
    now = time.time() if now is None else now
    if now - item.mtime < min_age:
        return False
    if previous is not None and previous != (item.size, item.mtime):
        return False
    return True


def claimed_dir(work_dir: Path, collectivite: str, flow: str) -> Path:
    return work_dir / "claimed" / collectivite / flow


def claim(item: Dropped, work_dir: Path) -> Path | None:
    """Atomically move a dropped file into the processing area. None if someone else took it."""
    target_dir = claimed_dir(work_dir, item.collectivite, item.flow)
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = target_dir / f"{stamp}__{item.path.name}"
    try:
        os.rename(item.path, target)
    except FileNotFoundError:
        return None
    for suffix in MARKER_SUFFIXES:
        marker = item.path.with_name(item.path.name + suffix)
        try:
            marker.unlink()
        except FileNotFoundError:
            pass
    return target


def claim_stable(inbox_root: Path, work_dir: Path, *, min_age: float = 2.0) -> list[Path]:
    """The sweep's safety net: claim every file that is stable now (no memory of previous polls)."""
    return [p for item in scan(inbox_root) if is_stable(item, min_age=min_age) and (p := claim(item, work_dir))]


def list_claimed(work_dir: Path) -> Iterator[tuple[str, str, Path]]:
    root = work_dir / "claimed"
    if not root.is_dir():
        return
    for coll_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for flow_dir in sorted(p for p in coll_dir.iterdir() if p.is_dir()):
            for f in sorted(flow_dir.iterdir()):
                if f.is_file():
                    yield coll_dir.name, flow_dir.name, f


def original_name(claimed: Path) -> str:
    return claimed.name.split("__", 1)[1] if "__" in claimed.name else claimed.name


def reject_beside(inbox_root: Path, collectivite: str, flow: str, name: str, original: Path | bytes | None,
                  explanation: str, extra_files: dict[str, bytes] | None = None, *, key: str | None = None) -> Path:
    """Put the refused original (moved if a path, written if bytes) and its French explanation
    into the inbox's rejected folder, side by side."""
    folder = inbox_root / collectivite / flow / REJECTED
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = folder / f"{key or stamp}_{name}"  # a stable key makes a retried refusal overwrite, not duplicate
    if isinstance(original, Path):
        os.replace(original, base)
    elif original is not None:
        _atomic_write(base, original)
    _atomic_write(base.with_name(base.name + ".erreur.txt"), explanation.encode("utf-8"))
    for suffix, content in (extra_files or {}).items():
        _atomic_write(base.with_name(base.name + suffix), content)
    return base


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TooLarge(Exception):
    """An upload went past its size cap (the partial copy is already removed)."""


def stream_to_file(src: BinaryIO, dst: Path, max_bytes: int) -> tuple[int, str]:
    """Copy an upload to `dst` in 1 MiB chunks, durably; returns (size, sha256).

    Stops as soon as `max_bytes` is passed (an upload is never held whole in memory); on any
    error the partial file is removed and the error raised (TooLarge past the cap).
    """
    h, size = hashlib.sha256(), 0
    try:
        with dst.open("wb") as out:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"{dst.name}: more than {max_bytes} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return size, h.hexdigest()
