"""The append-only journal: every state change, chained by hash so tampering is detectable."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.dossier.db import lock
from flows.dossier.models import JournalEntry

GENESIS = "0" * 64


def _canonical(entry: JournalEntry) -> bytes:
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
    payload = {
        "dossier": entry.dossier_id,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "event": entry.event,
        "from": entry.state_from,
        "to": entry.state_to,
        "actor": entry.actor,
        "message": entry.message,
        "details": entry.details or {},
        "prev": entry.prev_hash,
    }
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def entry_hash(entry: JournalEntry) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


def append(
    session: Session,
    *,
    dossier_id: str,
    event: str,
    message: str,
    actor: str = "demat",
    state_from: str | None = None,
    state_to: str | None = None,
    details: dict | None = None,
    at: datetime | None = None,
) -> JournalEntry:
    lock(session, "demat-journal")  # one global chain: writers take turns
    last = session.execute(select(JournalEntry.hash).order_by(JournalEntry.id.desc()).limit(1)).scalar()
    entry = JournalEntry(
        dossier_id=dossier_id,
        at=at or datetime.now(UTC),
        event=event,
        state_from=state_from,
        state_to=state_to,
        actor=actor,
        message=message,
        details=details or {},
        prev_hash=last or GENESIS,
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass
class ChainCheck:
    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""


def verify_chain(session: Session) -> ChainCheck:
    """Recompute every hash in order; stop at the first entry that does not match."""
    prev = GENESIS
    count = 0
    for entry in session.execute(select(JournalEntry).order_by(JournalEntry.id)).scalars():
        count += 1
        if entry.prev_hash != prev:
            return ChainCheck(False, count, entry.id, "le chaînage avec l'entrée précédente est rompu")
        if entry_hash(entry) != entry.hash:
            return ChainCheck(False, count, entry.id, "le contenu de l'entrée a été modifié")
        prev = entry.hash
    return ChainCheck(True, count)
