"""Operations on dossiers: create, move through the declared state machine, attach artefacts.

Every state change writes a journal entry in the same transaction, so the journal has no gap.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.dossier import journal, states
from flows.dossier.models import Artefact, Dossier
from flows.dossier.store import ArtefactStore


def now() -> datetime:
    return datetime.now(UTC)


def dossier_id_for(collectivite: str, flow: str, sha256: str, at: datetime | None = None) -> str:
    """Readable and deterministic: the same file always maps to the same dossier id."""
    day = (at or now()).strftime("%Y%m%d")
    return f"{collectivite}-{flow}-{day}-{sha256[:10]}"


def get(session: Session, dossier_id: str, *, for_update: bool = False) -> Dossier:
    stmt = select(Dossier).where(Dossier.id == dossier_id)
    if for_update and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    dossier = session.execute(stmt).scalar_one_or_none()
    if dossier is None:
        raise LookupError(f"dossier inconnu : {dossier_id}")
    return dossier


def by_sha(session: Session, sha256: str) -> Dossier | None:
    return session.execute(select(Dossier).where(Dossier.sha256 == sha256)).scalar_one_or_none()


def create(
    session: Session,
    *,
    collectivite: str,
    flow: str,
    original_name: str,
    sha256: str,
    size: int,
    doc_type: str = "",
    actor: str = "demat",
    previous_id: str | None = None,
    extra: dict | None = None,
) -> Dossier:
    at = now()
    version = 1
    if previous_id:
        version = get(session, previous_id).version + 1
    dossier = Dossier(
        id=dossier_id_for(collectivite, flow, sha256, at),
        collectivite=collectivite,
        flow=flow,
        doc_type=doc_type,
        state="recu",
        version=version,
        previous_id=previous_id,
        original_name=original_name,
        sha256=sha256,
        size=size,
        created_at=at,
        updated_at=at,
        extra=extra or {},
    )
    session.add(dossier)
    session.flush()
    message = f"Document « {original_name} » reçu ({size} octets)."
    if previous_id:
        message += f" Version {version}, remplace le dossier {previous_id}."
    journal.append(
        session, dossier_id=dossier.id, event="reception", message=message, actor=actor, state_to="recu",
        details={"sha256": sha256},
    )
    return dossier


def transition(
    session: Session,
    dossier: Dossier,
    target: str,
    *,
    message: str,
    actor: str = "demat",
    event: str | None = None,
    details: dict | None = None,
) -> bool:
    """Move the dossier to `target`. Returns False (and writes nothing) if it is already there."""
    if dossier.state == target and target != "depose_sae":
        return False
    states.check(dossier.flow, dossier.state, target)
    source = dossier.state
    dossier.state = target
    dossier.updated_at = now()
    if states.STATES[target].refusal:
        dossier.reason = message
    dossier.waiting_reason = None
    journal.append(
        session,
        dossier_id=dossier.id,
        event=event or target,
        message=message,
        actor=actor,
        state_from=source,
        state_to=target,
        details=details,
    )
    return True


def note(session: Session, dossier: Dossier, *, event: str, message: str, actor: str = "demat",
         details: dict | None = None) -> None:
    """A journal entry without state change (a letter received, a transient wait...)."""
    journal.append(session, dossier_id=dossier.id, event=event, message=message, actor=actor, details=details)


def attach(
    session: Session,
    store: ArtefactStore,
    dossier: Dossier,
    *,
    kind: str,
    name: str,
    data: bytes,
    media_type: str = "application/octet-stream",
) -> Artefact:
    sha = store.put(data)
    existing = session.execute(
        select(Artefact).where(Artefact.dossier_id == dossier.id, Artefact.kind == kind, Artefact.sha256 == sha)
    ).scalar_one_or_none()
    if existing:
        return existing
    art = Artefact(
        dossier_id=dossier.id, kind=kind, name=name, sha256=sha, size=len(data), media_type=media_type,
        created_at=now(),
    )
    session.add(art)
    session.flush()
    return art


def artefact(dossier: Dossier, kind: str) -> Artefact | None:
    """The latest artefact of a kind."""
    found = [a for a in dossier.artefacts if a.kind == kind]
    return found[-1] if found else None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def link_previous(session: Session, dossier: Dossier, previous: Dossier, *, actor: str = "demat") -> bool:
    """Make `dossier` the next version of `previous` (a corrected file after a refusal or rejection).

    Both journals say so, in French. Idempotent: linking the same pair again writes nothing.
    """
    if dossier.previous_id == previous.id or dossier.id == previous.id:
        return False
    dossier.previous_id = previous.id
    dossier.version = (previous.version or 1) + 1
    note(session, dossier, event="nouvelle_version", actor=actor,
         message=f"Version {dossier.version} du dossier {previous.id} ({previous.original_name}).",
         details={"previous_id": previous.id})
    note(session, previous, event="version_suivante", actor=actor,
         message=f"Une version corrigée a été déposée : dossier {dossier.id} ({dossier.original_name}).",
         details={"next_id": dossier.id})
    return True


def wait(session: Session, dossier: Dossier, reason: str, *, details: dict | None = None) -> bool:
    """Say why the dossier is waiting (a counterpart down...), journaled once per distinct reason.

    The reason is cleared by the next transition. Returns True when it was new.
    """
    if dossier.waiting_reason == reason:
        return False
    dossier.waiting_reason = reason
    note(session, dossier, event="attente", message=reason, details=details)
    return True
