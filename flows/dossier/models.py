"""demat's own tables (not Airflow's metadata): dossiers, their journal, artefacts, inbound messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Dossier(Base):
    __tablename__ = "dossier"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    collectivite: Mapped[str] = mapped_column(String(64), index=True)
    flow: Mapped[str] = mapped_column(String(16), index=True)  # actes | helios
    doc_type: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    previous_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    original_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # business keys an agent searches by
    siren: Mapped[str | None] = mapped_column(String(9), index=True, nullable=True)
    idacte: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    numero_interne: Mapped[str | None] = mapped_column(String(32), nullable=True)
    nomfic: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    objet: Mapped[str | None] = mapped_column(Text, nullable=True)
    montant: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # transmission and archive facts, recorded before moving on (idempotency)
    transmission_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    message_identifier: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    archive_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # last refusal reason, French
    waiting_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # transient wait, French
    run_id: Mapped[str | None] = mapped_column(String(250), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    transmitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deposited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)

    journal: Mapped[list[JournalEntry]] = relationship(
        back_populates="dossier", order_by="JournalEntry.id", lazy="selectin"
    )
    artefacts: Mapped[list[Artefact]] = relationship(
        back_populates="dossier", order_by="Artefact.id", lazy="selectin"
    )

    __table_args__ = (Index("ix_dossier_coll_state", "collectivite", "state"),)


class JournalEntry(Base):
    """Append-only; each entry is chained to the previous one by hash."""

    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dossier_id: Mapped[str] = mapped_column(ForeignKey("dossier.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event: Mapped[str] = mapped_column(String(64))
    state_from: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state_to: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor: Mapped[str] = mapped_column(String(128), default="demat")
    message: Mapped[str] = mapped_column(Text)  # French
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    dossier: Mapped[Dossier] = relationship(back_populates="journal")


class Artefact(Base):
    """A file attached to a dossier, stored content-addressed (sha256), never modified."""

    __tablename__ = "artefact"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dossier_id: Mapped[str] = mapped_column(ForeignKey("dossier.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    dossier: Mapped[Dossier] = relationship(back_populates="artefacts")

    __table_args__ = (UniqueConstraint("dossier_id", "kind", "sha256", name="uq_artefact_once"),)


class InboundMessage(Base):
    """A reply already processed (ARActe, PES_ACQUIT, SAE reply): processing twice is a no-op."""

    __tablename__ = "inbound_message"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    counterpart: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    dossier_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), default="")
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("counterpart", "sha256", name="uq_inbound_once"),)


class EnvelopeSerial(Base):
    """@ctes envelope serial per collectivité (SIREN) and day."""

    __tablename__ = "envelope_serial"

    siren: Mapped[str] = mapped_column(String(9), primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)
