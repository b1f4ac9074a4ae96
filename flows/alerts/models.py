"""The alert tables, on demat's own metadata (created by `flows.dossier.db.create_schema`).

An `Alert` is one fact worth a mail (unique `key`: recording it twice is a no-op). Each person who
must hear about it has an `AlertDelivery`; deliveries of one address are gathered into an
`AlertDigest`, the mail actually sent, kept with its content so that a retry resends the same mail.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from flows.dossier.models import Base

_ID = BigInteger().with_variant(Integer, "sqlite")

KINDS = {
    "refus": "Refus",
    "courrier": "Courrier de la préfecture",
    "bloque": "Dossier bloqué",
    "echeance_parapheur": "Échéance du parapheur proche",
    "certificat": "Certificat à renouveler",
}


class Alert(Base):
    __tablename__ = "alert"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)  # the fact: recorded once
    kind: Mapped[str] = mapped_column(String(32), index=True)  # one of KINDS
    dossier_id: Mapped[str | None] = mapped_column(String(80), index=True, nullable=True)
    certificate: Mapped[str | None] = mapped_column(String(255), nullable=True)  # file name, never a secret
    collectivite: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    journal_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the refusal's journal entry
    recipients: Mapped[list] = mapped_column(JSON, default=list)  # Airflow users or addresses
    subject: Mapped[str] = mapped_column(String(255))  # French, one line
    text: Mapped[str] = mapped_column(Text)  # French: what happened and why
    action: Mapped[str] = mapped_column(Text, default="")  # French: what to do
    link: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # all delivered

    deliveries: Mapped[list[AlertDelivery]] = relationship(back_populates="alert", order_by="AlertDelivery.id")


class AlertDigest(Base):
    """One mail to one address; `sent_at` is set only once the SMTP server accepted it."""

    __tablename__ = "alert_digest"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(254), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    alerts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # French, no secret

    deliveries: Mapped[list[AlertDelivery]] = relationship(back_populates="digest", order_by="AlertDelivery.id")


class AlertDelivery(Base):
    """One alert for one recipient: pending until a sent digest carries it."""

    __tablename__ = "alert_delivery"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alert.id"), index=True)
    recipient: Mapped[str] = mapped_column(String(254))  # an Airflow user name or an address
    address: Mapped[str | None] = mapped_column(String(254), nullable=True)  # resolved when digested
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("alert_digest.id"), index=True, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # French: why it is still pending

    alert: Mapped[Alert] = relationship(back_populates="deliveries")
    digest: Mapped[AlertDigest | None] = relationship(back_populates="deliveries")

    __table_args__ = (UniqueConstraint("alert_id", "recipient", name="uq_alert_delivery_once"),)


class AlertCursor(Base):
    """Where a scan stopped (journal position, last certificate check), so each run reads only what is new."""

    __tablename__ = "alert_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
