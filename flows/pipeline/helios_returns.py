"""The Hélios return loop: the bordereau index, and every PES_Retour / PES_ACQUIT kept per collectivité.

`pes_bordereau` indexes (SIREN, "exercice:IdBord") -> dossier, filled when a PES is validated
(flows.pipeline.steps) so that matching a PES_Retour is one indexed query, not a scan of the
collectivité's dossiers. Dossiers validated before the index existed are indexed lazily: the first
PES_Retour of a SIREN indexes that SIREN's older dossiers once (`pes_bordereau_siren` remembers).

`pes_retour_recu` keeps every PES_Retour and PES_ACQUIT received (matched to a dossier or not),
its bytes in the artefact store, for the collectivité's list (UI and API) with a "lu" mark per
user (`pes_retour_lu`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.dossier import service
from flows.dossier.db import ensure_tables
from flows.dossier.models import Base, Dossier

INDEXED_STATES = ("valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive")


class BordereauIndex(Base):
    __tablename__ = "pes_bordereau"

    siren: Mapped[str] = mapped_column(String(9), primary_key=True)
    bordereau: Mapped[str] = mapped_column(String(64), primary_key=True)  # "exercice:IdBord"
    dossier_id: Mapped[str] = mapped_column(String(80), primary_key=True)


class IndexedSiren(Base):
    """SIRENs whose dossiers from before the index are indexed (the lazy migration, once each)."""

    __tablename__ = "pes_bordereau_siren"

    siren: Mapped[str] = mapped_column(String(9), primary_key=True)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HeliosReturn(Base):
    __tablename__ = "pes_retour_recu"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # PES_Retour | PES_ACQUIT
    siren: Mapped[str] = mapped_column(String(9), index=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    nomfic: Mapped[str | None] = mapped_column(String(128), nullable=True)
    summary: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    dossier_ids: Mapped[list] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ReturnRead(Base):
    __tablename__ = "pes_retour_lu"

    retour_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


TABLES = [BordereauIndex.__table__, IndexedSiren.__table__, HeliosReturn.__table__, ReturnRead.__table__]


def ensure_schema(session: Session) -> None:
    ensure_tables(session, "helios-returns", TABLES)


def index_dossier(session: Session, dossier: Dossier) -> int:
    """Index the bordereaux validation found in this PES (idempotent)."""
    ensure_schema(session)
    keys = [str(k)[:64] for k in (dossier.extra or {}).get("bordereaux") or []]
    if not dossier.siren or not keys:
        return 0
    have = set(session.execute(select(BordereauIndex.bordereau).where(
        BordereauIndex.siren == dossier.siren, BordereauIndex.dossier_id == dossier.id)).scalars())
    new = [k for k in dict.fromkeys(keys) if k not in have]
    session.add_all(BordereauIndex(siren=dossier.siren, bordereau=k, dossier_id=dossier.id) for k in new)
    session.flush()
    return len(new)


def _migrate_siren(session: Session, siren: str) -> None:
    if session.get(IndexedSiren, siren) is not None:
        return
    for d in session.execute(select(Dossier).where(Dossier.flow == "helios", Dossier.siren == siren)).scalars():
        index_dossier(session, d)
    session.add(IndexedSiren(siren=siren, indexed_at=service.now()))
    session.flush()


def dossiers_for(session: Session, siren: str, bordereaux: set[str], states=("transmis", "acquitte", "depose_sae",
                                                                               "archive")) -> list[tuple[Dossier, list[str]]]:
    """The dossiers whose PES carried one of these bordereaux, with the ones each carried (indexed query)."""
    ensure_schema(session)
    _migrate_siren(session, siren)
    rows = session.execute(select(BordereauIndex.dossier_id, BordereauIndex.bordereau).where(
        BordereauIndex.siren == siren, BordereauIndex.bordereau.in_(sorted(bordereaux)))).all()
    by_dossier: dict[str, list[str]] = {}
    for dossier_id, key in rows:
        by_dossier.setdefault(dossier_id, []).append(key)
    if not by_dossier:
        return []
    found = session.execute(select(Dossier).where(Dossier.id.in_(by_dossier), Dossier.state.in_(states))
                            .order_by(Dossier.created_at)).scalars().all()
    return [(d, sorted(by_dossier[d.id])) for d in found]


def record_return(session: Session, *, kind: str, siren: str, name: str, sha256: str, size: int,
                  nomfic: str | None, summary: str | None, dossier_ids: list[str]) -> HeliosReturn:
    ensure_schema(session)
    row = session.execute(select(HeliosReturn).where(HeliosReturn.sha256 == sha256, HeliosReturn.kind == kind)
                          ).scalars().first()
    if row is None:
        row = HeliosReturn(kind=kind, siren=siren[:9], name=name[:255], sha256=sha256, size=size,
                           nomfic=(nomfic or None) and nomfic[:128], summary=(summary or "")[:1000] or None,
                           dossier_ids=list(dossier_ids), received_at=service.now())
        session.add(row)
        session.flush()
    return row


def list_returns(session: Session, siren: str, user: str, *, limit: int = 100, offset: int = 0) -> list[dict]:
    ensure_schema(session)
    rows = session.execute(select(HeliosReturn).where(HeliosReturn.siren == siren)
                           .order_by(HeliosReturn.received_at.desc(), HeliosReturn.id.desc())
                           .limit(max(1, min(limit, 500))).offset(max(0, offset))).scalars().all()
    read = set(session.execute(select(ReturnRead.retour_id).where(
        ReturnRead.user == user, ReturnRead.retour_id.in_([r.id for r in rows]))).scalars()) if rows else set()
    return [{"id": r.id, "type": r.kind, "nom": r.name, "nomfic": r.nomfic, "resume": r.summary,
             "dossiers": r.dossier_ids or [], "rapproche": bool(r.dossier_ids), "recu_le": r.received_at,
             "lu": r.id in read, "taille": r.size} for r in rows]


def mark_read(session: Session, retour_id: int, user: str) -> bool:
    ensure_schema(session)
    if session.get(ReturnRead, (retour_id, user[:128])) is not None:
        return False
    session.add(ReturnRead(retour_id=retour_id, user=user[:128], read_at=service.now()))
    session.flush()
    return True
