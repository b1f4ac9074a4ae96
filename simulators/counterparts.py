"""The processing loop every simulated counterpart shares.

A counterpart root holds (outside the SFTP jail, so the client cannot touch them):
    ledger.sqlite   receptions (name, sha256) and the outbox of replies
    DOWN / HANG     outage switches read by the SFTP server
    recus/          received files, when `consume` is on
and the jail `sftp/` with `depot/` (the platform writes) and `retour/` (the counterpart answers).

Each complete file in depot/ (dot-prefixed and .part names are uploads in flight) is processed
once: the replies are computed by the counterpart's `rules` callable, then the reception and
its replies are committed in ONE SQLite transaction, so a crash before the commit reprocesses
the file (same seeded decisions, same replies) and a crash after it does not. Replies wait in
the outbox until their due time and are written into retour/ atomically (temporary dot name,
fsync, rename). `ledger.count(name)` tells tests how many times a name was received.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flows.transport.base import is_visible, sha256_stream
from flows.transport.local import fsync_dir

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 200 * 1024 * 1024
PARIS = ZoneInfo("Europe/Paris")


@dataclass
class Settings:
    """Behaviour of one counterpart; everything random is seeded per received file."""

    delay: float = 0.0  # seconds before the first answer (AR, acquit, acknowledgement)
    later_delay: float = 5.0  # seconds before later mail (courriers, ArchiveTransferReply)
    refuse_rate: float = 0.0  # odds of refusing a file that is valid
    silence_rate: float = 0.0  # odds of never answering (acknowledgment lost)
    later_rate: float = 0.0  # préfecture: odds of a later courrier / demande / lettre d'observations
    seed: int = 0
    consume: bool = False  # move processed files out of depot/ into <root>/recus/
    poll_interval: float = 0.5
    max_bytes: int = MAX_INPUT_BYTES
    extra: dict[str, Any] = field(default_factory=dict)  # counterpart-specific (known agreements...)


@dataclass
class Incoming:
    name: str
    data: bytes
    sha256: str
    rng: random.Random
    settings: Settings
    reception_id: int  # unique per counterpart: a serial for reply names
    received_at: float
    duplicate: bool = False  # the same name and content was already received and consumed
    too_large: bool = False
    known: Callable[[str], bool] = lambda key: False  # facts remembered by earlier decisions

    @property
    def day(self):
        """The counterpart's calendar day (Paris) when the file arrived."""
        return datetime.fromtimestamp(self.received_at, PARIS).date()


@dataclass
class Reply:
    name: str
    data: bytes
    delay: float | None = None  # None: settings.delay
    note: str = ""  # French, for the log


@dataclass
class Decision:
    """What the rules concluded: replies plus a short French outcome for the ledger."""

    replies: list[Reply]
    outcome: str = ""
    facts: list[str] = field(default_factory=list)  # remembered with the reception (IDActe, NomFic...)


Rules = Callable[[Incoming], Decision | list[Reply]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS receptions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL DEFAULT '',
    consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS receptions_name ON receptions(name, sha256);
CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, reception_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    reception_id INTEGER NOT NULL REFERENCES receptions(id),
    name TEXT NOT NULL,
    due_at REAL NOT NULL,
    data BLOB NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    delivered_at REAL
);
"""


class Ledger:
    """What a counterpart received and what it still has to answer (SQLite, survives restarts)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, *args) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def count(self, name: str) -> int:
        """How many times a file of that name was received (1 = exactly once)."""
        return self._rows("SELECT COUNT(*) FROM receptions WHERE name = ?", name)[0][0]

    def receptions(self) -> list[dict]:
        rows = self._rows("SELECT id, name, sha256, size, received_at, outcome, consumed FROM receptions ORDER BY id")
        keys = ("id", "name", "sha256", "size", "received_at", "outcome", "consumed")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def state(self, name: str, sha256: str) -> str:
        """'new', 'pending' (received, not yet moved out of depot) or 'consumed'."""
        rows = self._rows("SELECT consumed FROM receptions WHERE name = ? AND sha256 = ?", name, sha256)
        if not rows:
            return "new"
        return "pending" if any(r[0] == 0 for r in rows) else "consumed"

    def next_id(self) -> int:
        return self._rows("SELECT COALESCE(MAX(id), 0) + 1 FROM receptions")[0][0]

    def record(self, incoming: Incoming, decision: Decision, now: float, default_delay: float) -> None:
        """Reception and its replies in one transaction: all or nothing."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO receptions (id, name, sha256, size, received_at, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                    (incoming.reception_id, incoming.name, incoming.sha256, len(incoming.data), now, decision.outcome),
                )
                for reply in decision.replies:
                    delay = default_delay if reply.delay is None else reply.delay
                    db.execute(
                        "INSERT INTO outbox (reception_id, name, due_at, data, note) VALUES (?, ?, ?, ?, ?)",
                        (incoming.reception_id, reply.name, now + delay, reply.data, reply.note),
                    )
                for key in decision.facts:
                    db.execute("INSERT OR IGNORE INTO facts (key, reception_id) VALUES (?, ?)", (key, incoming.reception_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def known(self, key: str) -> bool:
        return bool(self._rows("SELECT 1 FROM facts WHERE key = ?", key))

    def mark_consumed(self, name: str, sha256: str) -> None:
        with self._lock:
            self._db.execute("UPDATE receptions SET consumed = 1 WHERE name = ? AND sha256 = ?", (name, sha256))

    def due(self, now: float) -> list[tuple[int, str, bytes, str]]:
        return self._rows(
            "SELECT id, name, data, note FROM outbox WHERE delivered_at IS NULL AND due_at <= ? ORDER BY due_at, id", now
        )

    def pending_replies(self) -> list[dict]:
        rows = self._rows("SELECT id, name, due_at FROM outbox WHERE delivered_at IS NULL ORDER BY due_at")
        return [{"id": r[0], "name": r[1], "due_at": r[2]} for r in rows]

    def delivered(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT name FROM outbox WHERE delivered_at IS NOT NULL ORDER BY id")]

    def mark_delivered(self, outbox_id: int, now: float) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET delivered_at = ? WHERE id = ?", (now, outbox_id))


def write_atomic(folder: Path, name: str, data: bytes) -> None:
    """Temporary dot name, fsync, rename: a reader never sees half a reply."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / name)
    fsync_dir(folder)


class Counterpart:
    """Watches <root>/sftp/depot, answers into <root>/sftp/retour through a ledger."""

    def __init__(self, name: str, root: str | Path, rules: Rules, settings: Settings | None = None):
        self.name = name
        self.root = Path(root)
        self.jail = self.root / "sftp"
        self.depot = self.jail / "depot"
        self.retour = self.jail / "retour"
        self.recus = self.root / "recus"
        for folder in (self.depot, self.retour):
            folder.mkdir(parents=True, exist_ok=True)
        self.rules = rules
        self.settings = settings or Settings()
        self.ledger = Ledger(self.root / "ledger.sqlite")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        self.stop()
        self.ledger.close()

    # -- one pass ------------------------------------------------------------------------------

    def poll_once(self, now: float | None = None) -> dict[str, int]:
        """Process every new complete file, then deliver the replies that are due."""
        processed = 0
        for entry in sorted(os.scandir(self.depot), key=lambda e: e.name):
            if not is_visible(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if self._handle(Path(entry.path), now):
                    processed += 1
            except Exception:  # one bad file must not stop the counterpart
                log.exception("[%s] échec du traitement de %s", self.name, entry.name)
        delivered = self.deliver_due(now)
        return {"processed": processed, "delivered": delivered}

    def _handle(self, path: Path, now: float | None) -> bool:
        size = path.stat().st_size
        too_large = size > self.settings.max_bytes
        data = b"" if too_large else path.read_bytes()
        sha = hashlib.sha256(data).hexdigest() if not too_large else _sha256_file(path)
        state = self.ledger.state(path.name, sha)
        if state == "pending" or (state == "consumed" and not self.settings.consume):
            if self.settings.consume:
                self._consume(path, sha)
            return False
        duplicate = state == "consumed"
        if duplicate:
            log.warning("[%s] DOUBLON : %s reçu à nouveau avec le même contenu", self.name, path.name)
        reception_id = self.ledger.next_id()
        seed = f"{self.settings.seed}:{self.name}:{sha}:{self.ledger.count(path.name)}"
        at = time.time() if now is None else now
        incoming = Incoming(
            name=path.name,
            data=data,
            sha256=sha,
            rng=random.Random(seed),  # noqa: S311 - simulation odds, not security
            settings=self.settings,
            reception_id=reception_id,
            received_at=at,
            duplicate=duplicate,
            too_large=too_large,
            known=self.ledger.known,
        )
        if incoming.rng.random() < self.settings.silence_rate:
            decision = Decision([], "silence simulé : aucune réponse ne sera envoyée")
        else:
            result = self.rules(incoming)
            decision = result if isinstance(result, Decision) else Decision(list(result))
        self.ledger.record(incoming, decision, at, self.settings.delay)
        log.info(
            "[%s] reçu %s (%d octets) : %s ; %d réponse(s) programmée(s)",
            self.name, path.name, size, decision.outcome or "traité", len(decision.replies),
        )
        if self.settings.consume:
            self._consume(path, sha)
        return True

    def _consume(self, path: Path, sha: str) -> None:
        self.recus.mkdir(parents=True, exist_ok=True)
        target = self.recus / f"{int(time.time() * 1000)}-{path.name}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)
        self.ledger.mark_consumed(path.name, sha)

    def deliver_due(self, now: float | None = None) -> int:
        at = time.time() if now is None else now
        count = 0
        for outbox_id, name, data, note in self.ledger.due(at):
            write_atomic(self.retour, name, data)
            self.ledger.mark_delivered(outbox_id, at)
            log.info("[%s] réponse déposée : %s%s", self.name, name, f" ({note})" if note else "")
            count += 1
        return count

    # -- background loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep the simulator alive; the next pass retries
                log.exception("[%s] erreur dans la boucle de traitement", self.name)
            stop.wait(self.settings.poll_interval)

    def start(self) -> Counterpart:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"counterpart-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def _sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return sha256_stream(fh)
