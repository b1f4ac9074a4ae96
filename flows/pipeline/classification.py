"""The préfecture's classification (matières, typologies) per collectivité: asked for (7-1), stored
when it comes back (7-2 RetourClassification, 7-3 sans changement), used by validation.

The classification says which matières and piece typologies an acte may carry, and its date must
be the ClassificationDateVersion of every acte sent: validating against a stale one is exactly
what makes the préfecture answer AnomalieActe 002. Rows are never updated: the latest wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.actes.classification import Classification, national_default, parse_retour_classification
from flows.dossier import service
from flows.dossier.db import lock, session_scope
from flows.dossier.models import Base
from flows.dossier.store import ArtefactStore
from flows.settings import Settings

log = logging.getLogger(__name__)

RETOUR = "7-2"
SANS_CHANGEMENT = "7-3"


class ClassificationRecord(Base):
    """One classification message received from the préfecture for a SIREN."""

    __tablename__ = "classification"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    siren: Mapped[str] = mapped_column(String(9), index=True)
    date: Mapped[date | None] = mapped_column(Date, nullable=True)  # DateClassification
    code: Mapped[str] = mapped_column(String(3), default=RETOUR)  # 7-2 or 7-3
    xml: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    archive_name: Mapped[str] = mapped_column(String(255), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    __table_args__ = (UniqueConstraint("siren", "sha256", name="uq_classification_once"),)


class ClassificationRequest(Base):
    """A DemandeClassification (7-1) sent for a SIREN; recorded before the upload (idempotent resend)."""

    __tablename__ = "classification_request"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    siren: Mapped[str] = mapped_column(String(9), index=True)
    collectivite: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(8))  # one request per collectivité and day at most
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    known_date: Mapped[date | None] = mapped_column(Date, nullable=True)  # classification we declared using
    status: Mapped[str] = mapped_column(String(16), default="prepare")  # prepare|transmis|repondu|refuse
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    transmitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (UniqueConstraint("siren", "day", name="uq_classification_request_day"),)


TABLES = [ClassificationRecord.__table__, ClassificationRequest.__table__]


# --------------------------------------------------------------------------------------------- reading
def current_classification(session: Session, siren: str) -> Classification | None:
    """The classification in force for a SIREN (latest DateClassification received), or None.

    A 7-3 "sans changement" newer than every 7-2 we hold only confirms a date: levels 1-2 and the
    default typologies are then used with that date."""
    from flows.pipeline.answers import ensure_schema

    ensure_schema(session)
    rows = session.execute(
        select(ClassificationRecord).where(ClassificationRecord.siren == siren)
        .order_by(ClassificationRecord.date.desc().nulls_last(), ClassificationRecord.received_at.desc())
    ).scalars().all()
    retour = next((r for r in rows if r.code == RETOUR), None)
    sans = next((r for r in rows if r.code == SANS_CHANGEMENT), None)
    if retour is None:
        return national_default(sans.date) if sans is not None and sans.date else None
    if sans is not None and sans.date and retour.date and sans.date > retour.date:
        return national_default(sans.date)
    try:
        return parse_retour_classification(retour.xml)
    except ValueError:  # stored because it parsed once; never expected
        log.exception("classification %s illisible", retour.id)
        return None


def current_date(session: Session, siren: str) -> date | None:
    c = current_classification(session, siren)
    return c.date if c is not None else None


# --------------------------------------------------------------------------------------------- receiving
def record_classification(session: Session, siren: str, msg, archive_name: str = "") -> tuple[ClassificationRecord, bool]:
    """Store a RetourClassification / ReponseClassificationSansChangement (ActesMessage) once.
    Returns (row, created)."""
    from flows.pipeline.answers import ensure_schema

    ensure_schema(session)
    code = RETOUR if msg.kind == "RetourClassification" else SANS_CHANGEMENT
    if code == RETOUR:
        parse_retour_classification(msg.data)  # refuse to store what validation could not read
    sha = service.sha256_bytes(msg.data)
    existing = session.execute(
        select(ClassificationRecord).where(ClassificationRecord.siren == siren, ClassificationRecord.sha256 == sha)
    ).scalar_one_or_none()
    if existing is not None:
        return existing, False
    row = ClassificationRecord(siren=siren, date=msg.date, code=code, xml=msg.data, sha256=sha,
                               archive_name=archive_name[:255], received_at=service.now())
    session.add(row)
    for req in session.execute(
        select(ClassificationRequest).where(ClassificationRequest.siren == siren,
                                            ClassificationRequest.status.in_(["prepare", "transmis"]))
    ).scalars():
        req.status, req.answered_at = "repondu", service.now()
    session.flush()
    return row, True


def mark_request_refused(session: Session, siren: str, detail: str) -> bool:
    from flows.pipeline.answers import ensure_schema

    ensure_schema(session)
    req = session.execute(
        select(ClassificationRequest).where(ClassificationRequest.siren == siren,
                                            ClassificationRequest.status == "transmis")
        .order_by(ClassificationRequest.id.desc())
    ).scalars().first()
    if req is None:
        return False
    req.status, req.detail = "refuse", detail[:2000]
    return True


# --------------------------------------------------------------------------------------------- asking
@dataclass
class RequestOutcome:
    collectivite: str
    siren: str
    name: str
    sent: bool  # False: already there (a retry) or already asked today
    message: str


def request_classification(settings: Settings, collectivite: str, endpoint_factory, upload_dir: str = "depot", *,
                           force: bool = False) -> RequestOutcome:
    """Build and send a DemandeClassification (7-1) for one collectivité; once a day unless `force`.

    Recorded before sending (same bytes on a retry); the 7-2 / 7-3 comes back through the
    collection of the préfecture's replies (flows.pipeline.prefecture)."""
    from flows.actes.classification import build_demande_classification
    from flows.actes.transmission import paris_today
    from flows.pipeline.answers import ensure_schema
    from flows.pipeline.steps import _next_serial

    coll = settings.config.collectivite(collectivite)
    store = ArtefactStore(settings.store_root)
    today = paris_today()
    day = today.strftime("%Y%m%d")
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        lock(session, f"classification-{coll.siren}-{day}")
        req = session.execute(
            select(ClassificationRequest).where(ClassificationRequest.siren == coll.siren,
                                                ClassificationRequest.day == day)
        ).scalar_one_or_none()
        if req is not None and req.status != "prepare" and not force:
            return RequestOutcome(coll.slug, coll.siren, req.name, False,
                                  f"Classification déjà demandée aujourd'hui pour {coll.name} ({req.name}).")
        if req is None or (force and req.status != "prepare"):
            known = current_date(session, coll.siren)
            serial = _next_serial(session, coll.siren, day)
            tx = build_demande_classification(coll, known, serial=serial, trigram=settings.config.trigram, day=today)
            sha = store.put(tx.archive_bytes)
            if req is None:
                req = ClassificationRequest(siren=coll.siren, collectivite=coll.slug, day=day,
                                            created_at=service.now())
                session.add(req)
            req.name, req.sha256, req.known_date, req.status = tx.archive_name, sha, known, "prepare"
            session.flush()
        name, sha, req_id = req.name, req.sha256, req.id
    data = store.get(sha)
    with endpoint_factory("prefecture") as ep:
        uploaded = ep.upload_atomic(upload_dir, name, data)
    with session_scope(settings.database_url) as session:
        req = session.get(ClassificationRequest, req_id)
        if req.status == "prepare":
            req.status, req.transmitted_at = "transmis", service.now()
    return RequestOutcome(coll.slug, coll.siren, name, uploaded,
                          f"Demande de classification (7-1) transmise pour {coll.name} : {name}.")


def request_all(settings: Settings, endpoint_factory, upload_dir: str = "depot", *, only: str = "",
                force: bool = False) -> list[RequestOutcome]:
    slugs = [only] if only else [c.slug for c in settings.config.collectivites]
    return [request_classification(settings, s, endpoint_factory, upload_dir, force=force) for s in slugs]
