"""Watched inbox folders: find complete files, claim them atomically, set aside what cannot be taken.

Layout: <inbox>/<collectivité>/<flux>/ where agents drop files; <inbox>/<collectivité>/<flux>/rejetes/
holds refused files with a French explanation beside each. Claimed files move (rename, same
filesystem) into <work>/claimed/<collectivité>/<flux>/ so that two watchers never take the same file.

Whatever an agent (or a broken client) puts in an inbox, the entry is either claimed or set aside
into rejetes/ with a French explanation, and never stops the other files: a name that is not UTF-8,
too long or full of control characters, a symlink (never followed), a directory, a FIFO (never
opened), a socket, a device or an unreadable file. Every name demat writes is derived from the
agent's name and bounded, so no prefix can push it past the filesystem's 255 bytes.

When is a file complete? Where the filesystem reports events (inotify on a local disk), a file is
complete when its writer closes it after writing (IN_CLOSE_WRITE) or when it is renamed into the
inbox (IN_MOVED_TO): a writer that pauses mid-file is never taken half-written. Where it does not
(network shares, or files already there when the watcher starts), a file is complete when demat
has seen it unchanged for `min_age` seconds. A `<name>.ok` or `<name>.done` marker always says the
file is complete.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

FLOWS = ("actes", "helios")
REJECTED = "rejetes"
# sub-folders the platform itself keeps in a flow folder (answers to the préfecture live in actes/)
RESERVED_DIRS = frozenset({REJECTED, "courriers", "reponses"})
IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp", ".ok", ".done", ".erreur.txt")
MARKER_SUFFIXES = (".ok", ".done")

NAME_MAX = 255  # bytes, every filesystem demat runs on (ext4, xfs, tmpfs, NFS, SMB)
MAX_NAME_BYTES = 240  # longer names are set aside: the agent is asked to shorten them
# a derived name keeps this much of the agent's name; the rest of NAME_MAX is for demat's prefix
# (stamp, short hash, dossier id) and suffixes (".erreur.txt", ".rapport-qualite.html", ".tmp")
SUFFIX_RESERVE = 32
ABANDON_AGE = 24 * 3600.0  # a temporary or hidden entry unchanged this long is set aside
OPEN_MAX_AGE = 3600.0  # events: a file created but never closed (a hard link) is taken after this
SAFETY_AGE = 600.0  # events: the sweep's safety net takes only files untouched this long

# Filesystems whose remote writers produce no inotify event here (statfs magic numbers not needed:
# /proc/self/mountinfo names them).
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "fuseblk", "fuse.sshfs",
                        "ceph", "glusterfs", "fuse.glusterfs", "afs", "lustre", "gpfs", "davfs", "fuse.s3fs",
                        "fuse.rclone", "virtiofs", "vboxsf", "ncpfs"})


@dataclass(frozen=True)
class Dropped:
    collectivite: str
    flow: str
    path: Path
    size: int
    mtime: float
    kind: str = "file"  # file, symlink, directory, fifo, socket, device, other
    ctime: float = 0.0
    ino: int = 0

    @property
    def signature(self) -> tuple:
        return (self.kind, self.size, self.mtime, self.ctime, self.ino)


def ensure_layout(inbox_root: Path, collectivites: list[str], flows: tuple[str, ...] = FLOWS) -> None:
    for slug in collectivites:
        for flow in flows:
            (inbox_root / slug / flow / REJECTED).mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------- names
def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def readable_name(name: str) -> str:
    """The name as the agent reads it: UTF-8 (else Windows-1252, what a French Windows client sends),
    NFC, every control or invisible character shown as "?". Always encodable, never a surrogate."""
    raw = os.fsencode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    text = unicodedata.normalize("NFC", text)
    return "".join("?" if _is_control(ch) else ch for ch in text)


def shorten(text: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, the extension kept, the cut marked with "…"."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    stem, dot, ext = text.rpartition(".")
    tail = f"….{ext}" if dot and stem and 0 < len(ext.encode("utf-8")) <= 10 else "…"
    if not (dot and stem and tail != "…"):
        stem = text
    budget = max(max_bytes - len(tail.encode("utf-8")), 1)
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore") + tail


def stored_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A name demat may write, derived from the agent's: readable, no separator, no character a
    Windows share refuses, not hidden, not option-like, at most `max_bytes` of UTF-8."""
    text = readable_name(name)
    text = "".join("_" if ch in '\\/:*?"<>|' else ch for ch in text)
    text = text.lstrip(".-~ ").rstrip(". ") or "fichier"
    return shorten(text, max_bytes)


def name_tag(name: str) -> str:
    """A short hash of the exact bytes of a name: two names that read alike stay apart."""
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:8]


def bounded(prefix: str, name: str, *, reserve: int = SUFFIX_RESERVE) -> str:
    """`prefix` + the derived name, never longer than NAME_MAX even with a suffix of `reserve` bytes."""
    budget = NAME_MAX - len(prefix.encode("utf-8")) - reserve
    return prefix + stored_name(name, max(budget, 16))


def agent_path(collectivite: str, flow: str, name: str) -> str:
    """The file as the agent knows it (its place in the inbox), never a server path."""
    return f"{readable_name(collectivite)}/{readable_name(flow)}/{readable_name(name)}"


@dataclass(frozen=True)
class Problem:
    """Why an entry cannot be taken, in French: what is wrong and what to do."""

    rule: str
    why: str
    fix: str


def name_problem(name: str) -> Problem | None:
    """A name demat refuses (the agent renames the file), or None."""
    raw = os.fsencode(name)
    shown = readable_name(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        ascii_form = unicodedata.normalize("NFKD", shown).encode("ascii", "ignore").decode().replace("?", "_")
        return Problem("NOM-ENCODAGE",
                       f"son nom n'est pas écrit en UTF-8 (octets reçus : {raw!r} ; sans doute un nom Windows-1252 / "
                       f"Latin-1, lu ici « {shown} »), il ne peut être ni affiché ni transmis de façon sûre",
                       f"renommez le fichier (par exemple « {shorten(ascii_form, 80) or 'document'} ») ou réglez votre "
                       "logiciel de transfert (SFTP, FTP) en UTF-8, puis déposez-le à nouveau")
    if len(raw) > MAX_NAME_BYTES:
        return Problem("NOM-LONGUEUR",
                       f"son nom est trop long ({len(text)} caractères, {len(raw)} octets ; au plus {MAX_NAME_BYTES} "
                       "octets)",
                       f"raccourcissez le nom (par exemple « {shorten(stored_name(name), 80)} ») puis déposez le fichier "
                       "à nouveau")
    if any(_is_control(ch) for ch in text):
        return Problem("NOM-CARACTERES",
                       "son nom contient des caractères de contrôle ou invisibles (saut de ligne, tabulation, inversion "
                       f"du sens d'écriture…), lu ici « {shown} »",
                       "renommez le fichier avec des lettres, chiffres, espaces, tirets et points seulement, puis "
                       "déposez-le à nouveau")
    return None


_KIND_PROBLEMS = {
    "symlink": Problem("ENTREE-LIEN", "c'est un lien symbolique ; demat ne suit jamais un lien (il n'a pas été lu)",
                       "déposez le fichier lui-même, pas un lien vers lui"),
    "directory": Problem("ENTREE-DOSSIER", "c'est un dossier ; demat attend un fichier par document",
                         "déposez les documents un par un (un acte : son ZIP ; un flux PES V2 : son fichier XML)"),
    "fifo": Problem("ENTREE-SPECIALE", "ce n'est pas un fichier ordinaire mais un tube nommé (FIFO) ; il n'a pas été "
                    "ouvert", "déposez un fichier ordinaire (copie du document)"),
    "socket": Problem("ENTREE-SPECIALE", "ce n'est pas un fichier ordinaire mais une socket",
                      "déposez un fichier ordinaire (copie du document)"),
    "device": Problem("ENTREE-SPECIALE", "ce n'est pas un fichier ordinaire mais un périphérique ; il n'a pas été ouvert",
                      "déposez un fichier ordinaire (copie du document)"),
    "other": Problem("ENTREE-SPECIALE", "ce n'est pas un fichier ordinaire",
                     "déposez un fichier ordinaire (copie du document)"),
}
UNREADABLE = Problem("ENTREE-ILLISIBLE", "demat n'a pas le droit de le lire (permissions du fichier)",
                     "donnez le droit de lecture au fichier (ou déposez-le avec votre compte de dépôt habituel), puis "
                     "déposez-le à nouveau")
ABANDONED = Problem("ENTREE-TEMPORAIRE",
                    "son nom est celui d'un fichier caché ou d'un transfert en cours (point initial, suffixe .part, "
                    ".tmp, .ok…) et il n'a pas changé depuis longtemps : le transfert a sans doute été interrompu",
                    "si c'est un document, renommez-le sans point initial ni suffixe de transfert et déposez-le à "
                    "nouveau ; sinon supprimez-le")


def explanation(collectivite: str, flow: str, name: str, problem: Problem, kept_as: str) -> str:
    return (f"Le dépôt « {agent_path(collectivite, flow, name)} » a été mis de côté : {problem.why}.\n"
            f"Règle : {problem.rule}.\n"
            f"Correction : {problem.fix}.\n"
            f"L'élément déposé est conservé tel quel à côté de ce message, sous le nom « {kept_as} ».\n")


# --------------------------------------------------------------------------------------------- scanning
def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def _ignored(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(IGNORED_SUFFIXES)


def flow_dirs(inbox_root: Path) -> list[tuple[str, str, Path]]:
    """Every <collectivité>/<flux> folder of the inbox. The inbox root and the collectivités' folders
    may be links the operator made; a flow folder that is a link is not followed (an agent who can
    write in its collectivité's folder could point it anywhere)."""
    out: list[tuple[str, str, Path]] = []
    try:
        with os.scandir(inbox_root) as it:
            colls = sorted(it, key=lambda e: e.name)
    except OSError:
        return out
    for coll in colls:
        if not coll.is_dir():
            continue
        for flow in FLOWS:
            path = Path(coll.path) / flow
            if path.is_dir() and not path.is_symlink():  # a link made by an agent would lead anywhere
                out.append((coll.name, flow, path))
    return out


def entries(inbox_root: Path, dirs: Iterable[tuple[str, str, Path]] | None = None) -> Iterator[Dropped]:
    """Every entry of every flow folder, whatever its kind (lstat: nothing is followed or opened),
    except the platform's own sub-folders. A folder that cannot be listed is skipped, not fatal."""
    for coll, flow, folder in (flow_dirs(inbox_root) if dirs is None else dirs):
        try:
            with os.scandir(folder) as it:
                found = list(it)
        except OSError as exc:
            log.warning("Dossier d'entrée %s/%s illisible : %s", readable_name(coll), flow, exc.strerror)
            continue
        for entry in found:
            if entry.name in RESERVED_DIRS and entry.is_dir(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone since the listing
                continue
            yield Dropped(coll, flow, Path(entry.path), st.st_size, st.st_mtime, _kind(st.st_mode), st.st_ctime,
                          st.st_ino)


def scan(inbox_root: Path) -> Iterator[Dropped]:
    """Every candidate file in every inbox (regular, not temporary, not claimed yet)."""
    for item in entries(inbox_root):
        if item.kind == "file" and not _ignored(item.path.name):
            yield item


def has_marker(path: Path) -> bool:
    return any(os.path.lexists(f"{path}{suffix}") for suffix in MARKER_SUFFIXES)


def is_stable(item: Dropped, *, min_age: float, previous: tuple[int, float] | None = None,
              now: float | None = None) -> bool:
    """Without memory: a marker says the file is complete, or it has not changed for `min_age`
    seconds (and, when known, had the same size and mtime at the previous poll)."""
    if has_marker(item.path):
        return True
    now = time.time() if now is None else now
    if now - item.mtime < min_age:
        return False
    if previous is not None and previous != (item.size, item.mtime):
        return False
    return True


# --------------------------------------------------------------------------------------------- moving
def claimed_dir(work_dir: Path, collectivite: str, flow: str) -> Path:
    return work_dir / "claimed" / collectivite / flow


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


def claim(item: Dropped, work_dir: Path) -> Path | None:
    """Atomically move a dropped file into the processing area, under a derived, bounded name
    (`<stamp>-<hash of the name>__<readable name>`). None if someone else took it."""
    target_dir = claimed_dir(work_dir, item.collectivite, item.flow)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / bounded(f"{_stamp()}-{name_tag(item.path.name)}__", item.path.name, reserve=0)
    try:
        os.rename(item.path, target)
    except FileNotFoundError:
        return None
    for suffix in MARKER_SUFFIXES:  # an empty marker goes with its file; anything else stays, to be set aside
        marker = f"{item.path}{suffix}"
        try:
            st = os.lstat(marker)
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(marker)
        except OSError:  # none (or a name too long to have one)
            pass
    return target


def claim_stable(inbox_root: Path, work_dir: Path, *, min_age: float = 2.0, strict: bool = False,
                 abandon_age: float = ABANDON_AGE) -> list[Path]:
    """The sweep's safety net, without memory of previous polls: claim what is stable now, set aside
    what cannot be taken. `strict` (the watcher uses events): the change time counts too, so a file
    whose writer restored an old modification time is not taken early."""
    intake = Intake(inbox_root, work_dir, min_age=min_age, abandon_age=abandon_age, stateless=True, strict=strict)
    return intake.step().claimed


def list_claimed(work_dir: Path) -> Iterator[tuple[str, str, Path]]:
    root = work_dir / "claimed"
    if not root.is_dir():
        return
    for coll_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for flow_dir in sorted(p for p in coll_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            with os.scandir(flow_dir) as it:
                names = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
            for name in names:
                yield coll_dir.name, flow_dir.name, flow_dir / name


def original_name(claimed: Path) -> str:
    name = claimed.name.split("__", 1)[1] if "__" in claimed.name else claimed.name
    return readable_name(name)


def rejected_dir(inbox_root: Path, collectivite: str, flow: str) -> Path:
    """The flow's rejetes/ folder, a real folder: a link or a file put in its place is moved out of
    the way (and set aside on the next look), never written through."""
    folder = inbox_root / collectivite / flow / REJECTED
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if not stat.S_ISDIR(st.st_mode):
        os.rename(folder, folder.with_name(f"{REJECTED}-{_stamp()}"))
        folder.mkdir()
    return folder


def _unique(path: Path) -> Path:
    if not os.path.lexists(path):
        return path
    for i in range(2, 1000):
        candidate = path.with_name(f"{i}-{path.name}")
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(errno.EEXIST, "no free name", str(path))


def reject_beside(inbox_root: Path, collectivite: str, flow: str, name: str, original: Path | bytes | None,
                  explanation: str, extra_files: dict[str, bytes] | None = None, *, key: str | None = None) -> Path:
    """Put the refused original (moved if a path, written if bytes) and its French explanation
    into the inbox's rejected folder, side by side, under a derived name that always fits."""
    folder = rejected_dir(inbox_root, collectivite, flow)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    # a stable key makes a retried refusal overwrite, not duplicate
    base = folder / bounded(f"{key or stamp}_", name)
    if isinstance(original, Path):
        if key is None:
            base = _unique(base)
        os.replace(original, base)
    elif original is not None:
        _atomic_write(base, original)
    _atomic_write(base.with_name(base.name + ".erreur.txt"), explanation.encode("utf-8", "replace"))
    for suffix, content in (extra_files or {}).items():
        _atomic_write(base.with_name(base.name + suffix), content)
    return base


def set_aside(inbox_root: Path, item: Dropped, problem: Problem) -> Path:
    """Move an entry that cannot be taken (the entry itself: a link is not followed, a FIFO not
    opened) into rejetes/ with its explanation. The bytes are moved, never copied."""
    folder = rejected_dir(inbox_root, item.collectivite, item.flow)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = _unique(folder / bounded(f"{stamp}-{name_tag(item.path.name)}_", item.path.name))
    os.rename(item.path, target)
    text = explanation(item.collectivite, item.flow, item.path.name, problem, target.name)
    _atomic_write(target.with_name(target.name + ".erreur.txt"), text.encode("utf-8", "replace"))
    return target


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _readable(path: Path) -> bool:
    """Can demat read it? Opened without following a link, without blocking, without a terminal."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        return False
    os.close(fd)
    return True


# --------------------------------------------------------------------------------------------- intake
def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (from /proc/self/mountinfo), "" if unknown."""
    try:
        real = os.path.realpath(path)
        best, fstype = "", ""
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = fields[4].encode().decode("unicode_escape") if "\\" in fields[4] else fields[4]
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype = mount, right.split()[0]
        return fstype
    except OSError:
        return ""


def events_wanted(inbox_root: Path, mode: str = "auto") -> bool:
    """Should the watcher trust filesystem events for this inbox? `mode`: "inotify" (yes), "poll"
    (no: the stability rule only), "auto" (yes on a local filesystem, no on a network share,
    whose remote writers produce no event here)."""
    mode = (mode or "auto").strip().lower()
    if mode in ("poll", "stabilite", "stability", "off", "0", "false"):
        return False
    if not os.path.exists("/proc/sys/fs/inotify"):
        return False
    if mode in ("inotify", "events", "on", "1", "true"):
        return True
    fstype = filesystem_type(inbox_root if inbox_root.exists() else inbox_root.parent)
    return fstype not in NETWORK_FS and not fstype.startswith("fuse.")


@dataclass
class Outcome:
    claimed: list[Path] = field(default_factory=list)
    set_aside: list[Path] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # claimed files as the agents know them
    dirs: list[Path] = field(default_factory=list)  # the flow folders seen (to watch)


class Intake:
    """What the watcher knows between two looks at the inboxes, and the decision for each entry.

    With events, `note()` records what the kernel said about a path: "closed" (written and closed,
    or renamed in), "writing" (created or modified since), "gone". A closed file is taken at once;
    a file being written waits for its close however long the writer pauses. Entries without events
    (already there when watching began, network shares, directories) are taken when seen unchanged
    for `min_age` seconds.
    """

    def __init__(self, inbox_root: Path, work_dir: Path, *, min_age: float = 2.0, events: bool = False,
                 abandon_age: float = ABANDON_AGE, open_max_age: float = OPEN_MAX_AGE, stateless: bool = False,
                 strict: bool = False):
        self.inbox_root, self.work_dir = Path(inbox_root), Path(work_dir)
        self.min_age, self.events, self.abandon_age, self.open_max_age = min_age, events, abandon_age, open_max_age
        self.stateless, self.strict = stateless, strict
        self.notes: dict[Path, str] = {}
        self.seen: dict[Path, tuple[tuple, float]] = {}  # path -> (signature, first seen with it, monotonic)
        self.failures: dict[Path, int] = {}

    # events ------------------------------------------------------------------------------------
    def note(self, path: Path, what: str) -> None:
        if what == "gone":
            self.notes.pop(path, None)
            self.seen.pop(path, None)
        else:
            self.notes[path] = what

    def forget_events(self) -> None:
        """The kernel's queue overflowed: what was noted may be stale; fall back to stability."""
        self.notes.clear()

    # decisions ---------------------------------------------------------------------------------
    def _quiet_for(self, item: Dropped, age: float, now: float) -> bool:
        """Unchanged for `age` seconds: as observed by this watcher, or (without memory) by the clock."""
        if age <= 0:
            return True
        if self.stateless:
            wall = time.time()
            changed = max(item.mtime, item.ctime) if self.strict else item.mtime
            return wall - changed >= age
        sig = item.signature
        previous = self.seen.get(item.path)
        if previous is None or previous[0] != sig:
            self.seen[item.path] = (sig, now)
            return False
        return now - previous[1] >= age

    def decide(self, item: Dropped, now: float) -> str | Problem | None:
        """"claim", a Problem (set aside now) or None (wait)."""
        name = item.path.name
        if item.kind not in ("file", "directory"):  # never a transfer in progress, never opened
            return _KIND_PROBLEMS.get(item.kind, _KIND_PROBLEMS["other"])
        if _ignored(name) or (item.kind == "directory" and name.startswith(".")):
            if name.endswith(MARKER_SUFFIXES) and item.kind == "file":
                target = str(item.path)[: -len(next(s for s in MARKER_SUFFIXES if name.endswith(s)))]
                if os.path.lexists(target):
                    return None  # the marker of a file still there: it goes with its file
            return ABANDONED if self._quiet_for(item, self.abandon_age, now) else None
        if item.kind == "directory":
            if not self._quiet_for(item, self.min_age, now):
                return None  # perhaps still being filled: move it aside whole
            return _KIND_PROBLEMS["directory"]
        if not self._complete(item, now):
            return None
        problem = name_problem(name)
        if problem is not None:
            return problem
        if not _readable(item.path):
            return UNREADABLE
        return "claim"

    def _complete(self, item: Dropped, now: float) -> bool:
        if has_marker(item.path):
            return True
        noted = self.notes.get(item.path) if self.events else None
        if noted == "closed":
            return True
        if noted == "writing":  # wait for the close, however long the writer pauses
            return self._quiet_for(item, self.open_max_age, now)
        return self._quiet_for(item, self.min_age, now)

    def step(self, notes: Iterable[tuple[Path, str]] = (), now: float | None = None) -> Outcome:
        """Apply the kernel's notes, then look at every entry once. Never raises for one entry."""
        for path, what in notes:
            self.note(path, what)
        now = time.monotonic() if now is None else now
        out = Outcome()
        dirs = flow_dirs(self.inbox_root)
        out.dirs = [d for _, _, d in dirs]
        present: set[Path] = set()
        for item in entries(self.inbox_root, dirs):
            present.add(item.path)
            try:
                decision = self.decide(item, now)
                if decision == "claim":
                    target = claim(item, self.work_dir)
                    if target is not None:
                        out.claimed.append(target)
                        out.shown.append(agent_path(item.collectivite, item.flow, item.path.name))
                    self._forget(item.path)
                elif isinstance(decision, Problem):
                    out.set_aside.append(set_aside(self.inbox_root, item, decision))
                    log.warning("Dépôt mis de côté (%s) : %s", decision.rule,
                                agent_path(item.collectivite, item.flow, item.path.name))
                    self._forget(item.path)
            except FileNotFoundError:
                self._forget(item.path)  # taken or removed meanwhile
            except OSError as exc:
                count = self.failures[item.path] = self.failures.get(item.path, 0) + 1
                if count == 1:  # said once, not at every poll
                    log.warning("Dépôt %s non pris en charge : %s",
                                agent_path(item.collectivite, item.flow, item.path.name), exc.strerror)
        for gone in [p for p in self.seen if p not in present]:
            self.seen.pop(gone, None)
        for gone in [p for p in self.notes if p not in present]:
            self.notes.pop(gone, None)
        for gone in [p for p in self.failures if p not in present]:
            self.failures.pop(gone, None)
        return out

    def _forget(self, path: Path) -> None:
        self.seen.pop(path, None)
        self.notes.pop(path, None)
        self.failures.pop(path, None)


# --------------------------------------------------------------------------------------------- uploads
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
                    raise TooLarge(f"{readable_name(dst.name)}: more than {max_bytes} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return size, h.hexdigest()
