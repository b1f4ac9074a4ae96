"""Gather each recipient's pending alerts into a digest and send the digests that are due.

Delivery guarantee: a digest is recorded (content and alerts) before it is sent, and marked sent
only after the SMTP server accepted it. An alert is therefore never lost; a crash between the
server's acceptance and the mark resends that one digest at the next run (same Message-ID, so a
mail system may drop the copy). At most one digest per address per `alerts.digest_minutes`.
"""

from __future__ import annotations

import logging
import smtplib
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select

from flows.alerts.digest import compose
from flows.alerts.models import Alert, AlertDelivery, AlertDigest
from flows.alerts.recipients import resolve
from flows.alerts.record import NOBODY
from flows.config import PlatformConfig
from flows.dossier.db import lock, session_scope
from flows.settings import Settings

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=30)


@dataclass(frozen=True)
class OutgoingMail:
    digest_id: int
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


class Mailer(Protocol):
    def send(self, mail: OutgoingMail) -> None:
        """Return only once the SMTP server accepted the mail; raise otherwise."""


@dataclass
class SendReport:
    sent: list[int] = field(default_factory=list)  # digest ids
    failed: dict[int, str] = field(default_factory=dict)  # digest id -> French reason
    held: dict[str, datetime] = field(default_factory=dict)  # address -> when its next digest may go
    unaddressed: int = 0  # deliveries waiting for an address

    def as_dict(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "unaddressed": self.unaddressed,
                "held": {a: t.isoformat() for a, t in self.held.items()}}


def _aware(at: datetime | None) -> datetime | None:
    return at if at is None or at.tzinfo else at.replace(tzinfo=UTC)


def _why(exc: BaseException) -> str:
    """A French reason an operator can act on; the exception text never carries a password."""
    if isinstance(exc, ConnectionRefusedError):
        reason = "le serveur SMTP refuse la connexion (arrêté ?)"
    elif isinstance(exc, socket.timeout | TimeoutError):
        reason = "le serveur SMTP ne répond pas (délai dépassé)"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        reason = "le serveur SMTP refuse l'adresse du destinataire"
    elif isinstance(exc, smtplib.SMTPResponseException):
        reason = f"le serveur SMTP a répondu {exc.smtp_code}"
    elif isinstance(exc, OSError | smtplib.SMTPException):
        reason = "le serveur SMTP est injoignable"
    else:
        reason = "échec de l'envoi"
    detail = " ".join(str(exc).split())[:300]
    return f"{reason} ({exc.__class__.__name__}{' : ' + detail if detail else ''})"


def _nobody_reason() -> str:
    return ("aucun destinataire pour cette alerte : déclarez des agents ou une adresse de contact pour la "
            "collectivité, ou des opérateurs (alerts.operators)")


def prepare_digests(settings: Settings, *, now: datetime) -> SendReport:
    """Resolve addresses of pending deliveries and build a digest for each address that is due."""
    config: PlatformConfig = settings.config
    interval = timedelta(minutes=config.alerts.digest_minutes)
    report = SendReport()
    with session_scope(settings.database_url) as session:
        lock(session, "demat-alerts-digest")
        pending = session.execute(
            select(AlertDelivery, Alert).join(Alert, AlertDelivery.alert_id == Alert.id)
            .where(AlertDelivery.digest_id.is_(None), AlertDelivery.sent_at.is_(None))
            .order_by(AlertDelivery.id)
        ).all()
        by_address: dict[str, list[tuple[AlertDelivery, Alert]]] = {}
        for delivery, alert in pending:
            found = resolve(config, delivery.recipient, alert.collectivite)
            reason = _nobody_reason() if delivery.recipient == NOBODY else found.reason
            if delivery.recipient == NOBODY or found.address is None:
                report.unaddressed += 1
                if delivery.note != reason:  # logged once per delivery, not at every run
                    delivery.note = reason
                    log.warning("Alerte %s en attente : %s", alert.key, reason)
                continue
            delivery.note = None
            by_address.setdefault(found.address.lower(), []).append((delivery, alert))  # one mailbox
        for address, items in by_address.items():
            in_flight = session.execute(select(AlertDigest.id).where(
                func.lower(AlertDigest.address) == address, AlertDigest.sent_at.is_(None))).first()
            if in_flight:
                continue  # these wait for the digest being retried, then for the next period
            last = _aware(session.execute(select(func.max(AlertDigest.sent_at)).where(
                func.lower(AlertDigest.address) == address)).scalar())
            if last is not None and now - last < interval:
                report.held[address] = last + interval
                continue
            alerts = list({a.id: a for _, a in items}.values())
            mail = compose(alerts, config, digest_minutes=config.alerts.digest_minutes)
            digest = AlertDigest(address=address,
                                 subject=mail.subject, body_text=mail.text, body_html=mail.html,
                                 alerts=len(alerts), created_at=now, next_try_at=now)
            session.add(digest)
            session.flush()
            for delivery, _ in items:
                delivery.digest_id = digest.id
                delivery.address = address
    return report


def _message_id(digest: AlertDigest) -> str:
    return f"<demat-alertes-{digest.id}-{int(_aware(digest.created_at).timestamp())}@demat>"


def _mark_sent(settings: Settings, digest_id: int, at: datetime) -> None:
    with session_scope(settings.database_url) as session:
        digest = session.get(AlertDigest, digest_id)
        if digest is None or digest.sent_at is not None:
            return
        digest.sent_at = at
        digest.last_error = None
        alert_ids = set()
        for d in digest.deliveries:
            d.sent_at = at
            alert_ids.add(d.alert_id)
        session.flush()
        for alert in session.execute(select(Alert).where(Alert.id.in_(alert_ids))).scalars():
            if all(d.sent_at is not None for d in alert.deliveries):
                alert.sent_at = at


def _mark_failed(settings: Settings, digest_id: int, reason: str, now: datetime) -> None:
    with session_scope(settings.database_url) as session:
        digest = session.get(AlertDigest, digest_id)
        digest.attempts = (digest.attempts or 0) + 1
        digest.last_error = reason
        digest.next_try_at = now + min(timedelta(minutes=2 ** (digest.attempts - 1)), MAX_BACKOFF)


def send_due(settings: Settings, mailer: Mailer, *, now: datetime | None = None) -> SendReport:
    """Build what is due, then send every unsent digest whose retry time has come, oldest first."""
    now = now or datetime.now(UTC)
    report = prepare_digests(settings, now=now)
    with session_scope(settings.database_url) as guard:
        lock(guard, "demat-alerts-send")  # one sender at a time, for the whole sending phase
        with session_scope(settings.database_url) as session:
            due = session.execute(select(AlertDigest).where(AlertDigest.sent_at.is_(None)).order_by(AlertDigest.id))
            mails = [
                OutgoingMail(d.id, d.address, d.subject, d.body_text, d.body_html,
                             {"Message-ID": _message_id(d), "Auto-Submitted": "auto-generated",
                              "X-Auto-Response-Suppress": "All", "X-Demat-Digest": str(d.id)})
                for d in due.scalars() if _aware(d.next_try_at) is None or _aware(d.next_try_at) <= now
            ]
        for mail in mails:
            try:
                mailer.send(mail)
            except Exception as exc:  # any failure: the digest stays unsent and is retried later
                reason = _why(exc)
                _mark_failed(settings, mail.digest_id, reason, now)
                report.failed[mail.digest_id] = reason
                log.warning("Envoi du message d'alertes %s à %s reporté : %s", mail.digest_id, mail.to, reason)
                continue
            _mark_sent(settings, mail.digest_id, now)
            report.sent.append(mail.digest_id)
            log.info("Message d'alertes %s envoyé à %s : %s", mail.digest_id, mail.to, mail.subject)
    return report
