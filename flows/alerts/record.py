"""Turn facts into alerts, each fact once (the alert's unique `key` says which fact it is).

- refusal: a journal entry whose target state is a refusal (`refus:<journal id>`);
- préfecture letter (courrier simple, pièces complémentaires, observations, déféré): the journal
  entry that recorded it (`courrier:<journal id>`);
- stuck: a dossier waiting on the State or the SAE past its threshold, once per waiting episode
  (`bloque:<dossier>:<state>:<since>`: a dossier that waits again later is a new episode);
- parapheur deadline near: once per dossier and circuit step (`echeance:<dossier>:<step>:<since>`);
- certificate: once per certificate and threshold (`certificat:<file>:<subject>:<expiry>:<threshold>`).

Every scan may run again at any time (a retry, a crash, two runs): it only adds what is missing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from flows.alerts import recipients as who
from flows.alerts import wording
from flows.alerts.models import Alert, AlertCursor, AlertDelivery
from flows.config import PlatformConfig
from flows.dossier import states
from flows.dossier.db import lock, session_scope
from flows.dossier.models import Dossier, JournalEntry
from flows.pipeline.prefecture import COURRIERS  # the letters' journal events
from flows.settings import Settings

log = logging.getLogger(__name__)

NOBODY = "-"  # the delivery of an alert nobody could be named for: kept pending, explained
REFUSALS = sorted(code for code, s in states.STATES.items() if s.refusal)
BACKLOG = timedelta(hours=24)  # first scan of an existing journal: only the last day's refusals
RESCAN = 200  # journal ids re-read below the cursor (idempotent), in case a commit landed late
CERT_EVERY = timedelta(hours=1)
OPERATOR_STATES = {"refuse_sae", "erreur"}  # refusals the operators must act on


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _stamp(at: datetime) -> str:
    """A wait's start, to the microsecond: two episodes in the same second stay two facts."""
    return _aware(at).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")


def _key(*parts: object) -> str:
    key = ":".join(str(p) for p in parts)
    return key if len(key) <= 255 else key[:190] + ":" + hashlib.sha256(key.encode()).hexdigest()


def add_alert(session: Session, *, key: str, kind: str, recipients: list[str], words: wording.Wording,
              now: datetime, dossier_id: str | None = None, collectivite: str | None = None,
              certificate: str | None = None, journal_id: int | None = None, link: str | None = None) -> Alert | None:
    """Record one alert and one pending delivery per recipient; None if this fact was already recorded."""
    if session.execute(select(Alert.id).where(Alert.key == key)).first():
        return None
    names = list(dict.fromkeys(r for r in recipients if r)) or [NOBODY]
    alert = Alert(key=key, kind=kind, dossier_id=dossier_id, collectivite=collectivite, certificate=certificate,
                  journal_id=journal_id, recipients=names, subject=words.subject, text=words.text,
                  action=words.action, link=link, created_at=now)
    session.add(alert)
    session.flush()
    for name in names:
        session.add(AlertDelivery(alert_id=alert.id, recipient=name))
    if names == [NOBODY]:
        log.warning("Alerte %s sans destinataire : déclarez des agents, une adresse de contact ou des "
                    "opérateurs (alerts.operators)", key)
    session.flush()
    return alert


def _cursor(session: Session, name: str) -> AlertCursor:
    cursor = session.get(AlertCursor, name)
    if cursor is None:
        cursor = AlertCursor(name=name, position=-1)
        session.add(cursor)
    return cursor


# --------------------------------------------------------------------------------------------- refusals
def record_refusals(session: Session, config: PlatformConfig, *, now: datetime, public_url: str,
                    operators: list[str]) -> list[Alert]:
    cursor = _cursor(session, "journal")
    top = session.execute(select(func.max(JournalEntry.id))).scalar() or 0
    low = max(cursor.position - RESCAN, 0)
    if cursor.position < 0:  # first scan: a day of history, not the whole past
        first = session.execute(select(func.min(JournalEntry.id)).where(JournalEntry.at >= now - BACKLOG)).scalar()
        cursor.position = low = (first - 1) if first is not None else top
    fresh = or_(JournalEntry.id > cursor.position, JournalEntry.at >= now - BACKLOG)  # the rescan stays recent
    entries = session.execute(
        select(JournalEntry).where(JournalEntry.id > low, JournalEntry.id <= top, fresh,
                                   or_(JournalEntry.state_to.in_(REFUSALS), JournalEntry.event.in_(COURRIERS)))
        .order_by(JournalEntry.id)
    ).scalars().all()
    out = []
    for entry in entries:
        dossier = session.get(Dossier, entry.dossier_id)
        if dossier is None:
            continue
        names: list[str] = []
        try:
            names += who.for_collectivite(config.collectivite(dossier.collectivite))
        except KeyError:
            pass  # a collectivité removed from the configuration: the operators still hear of it
        if entry.state_to in OPERATOR_STATES or not names:
            names += operators
        if entry.event in COURRIERS:  # a letter of the préfecture: the collectivité must read and answer it
            kind = "courrier"
            words = wording.courrier(dossier_id=dossier.id, original_name=dossier.original_name, kind=entry.event,
                                     message=entry.message, at=_aware(entry.at))
        else:
            kind = "refus"
            words = wording.refusal(dossier_id=dossier.id, flow=dossier.flow, original_name=dossier.original_name,
                                    state=entry.state_to, message=entry.message, at=_aware(entry.at))
        alert = add_alert(session, key=_key(kind, entry.id), kind=kind, recipients=names, words=words,
                          now=now, dossier_id=dossier.id, collectivite=dossier.collectivite, journal_id=entry.id,
                          link=wording.dossier_link(public_url, dossier.id))
        if alert is not None:
            out.append(alert)
    cursor.position = max(cursor.position, top)
    return out


# --------------------------------------------------------------------------------------------- stuck dossiers
def record_stuck(settings: Settings, session: Session, *, now: datetime, operators: list[str]) -> list[Alert]:
    from flows.pipeline.watch import find_stuck

    out = []
    for s in find_stuck(settings, now=now):
        dossier = session.get(Dossier, s.dossier_id)
        if dossier is None or dossier.state != s.state:
            continue
        try:
            names = who.for_collectivite(settings.config.collectivite(s.collectivite))
        except KeyError:
            names = []
        words = wording.stuck(dossier_id=s.dossier_id, original_name=dossier.original_name, message=s.message(),
                              state=s.state)
        alert = add_alert(session, key=_key("bloque", s.dossier_id, s.state, _stamp(s.since)),
                          kind="bloque", recipients=[*names, *operators], words=words, now=now,
                          dossier_id=s.dossier_id, collectivite=s.collectivite,
                          link=wording.dossier_link(settings.public_url, s.dossier_id))
        if alert is not None:
            out.append(alert)
    return out


# --------------------------------------------------------------------------------------------- parapheur deadlines
def _step_since(session: Session, dossier_id: str, step: int) -> datetime | None:
    """When the current step was asked: entering the parapheur (step 1) or its `parapheur_etape` note."""
    rows = session.execute(
        select(JournalEntry).where(JournalEntry.dossier_id == dossier_id).order_by(JournalEntry.id.desc())
    ).scalars()
    entered = None
    for e in rows:
        if step > 1 and e.event == "parapheur_etape" and (e.details or {}).get("step") == step:
            return _aware(e.at)
        if e.state_to == "au_parapheur":
            entered = _aware(e.at)
            break
    return entered


def record_deadlines(session: Session, config: PlatformConfig, *, now: datetime, public_url: str,
                     operators: list[str]) -> list[Alert]:
    from flows.pipeline.steps import human_steps

    out = []
    for dossier in session.execute(select(Dossier).where(Dossier.state == "au_parapheur")).scalars():
        try:
            coll = config.collectivite(dossier.collectivite)
        except KeyError:
            continue
        circuit = human_steps(coll, dossier)
        progress = (dossier.extra or {}).get("parapheur") or {}
        decided = set((progress.get("decisions") or {}).keys())
        asked = [s for s in (progress.get("asked") or [1]) if str(s) not in decided]
        if not asked or not circuit:
            continue
        step = max(asked)
        if step > len(circuit):
            continue
        current = circuit[step - 1]
        since = _step_since(session, dossier.id, step)
        if since is None:
            continue
        due = since + timedelta(days=current.deadline_days)
        window = min(timedelta(days=config.alerts.parapheur_warning_days), timedelta(days=current.deadline_days) / 2)
        if now < due - window:
            continue
        words = wording.deadline(dossier_id=dossier.id, original_name=dossier.original_name, collectivite=coll.name,
                                 step=step, steps=len(circuit), kind=current.kind, since=since, due=due, now=now)
        names = who.for_step(coll, current) or operators
        alert = add_alert(session, key=_key("echeance", dossier.id, step, _stamp(since)),
                          kind="echeance_parapheur", recipients=names, words=words, now=now, dossier_id=dossier.id,
                          collectivite=dossier.collectivite, link=wording.parapheur_link(public_url))
        if alert is not None:
            out.append(alert)
    return out


# --------------------------------------------------------------------------------------------- certificates
def _bucket(days_left: int | None, level: str, thresholds: list[int]) -> str:
    if level in ("expire", "illisible") or days_left is None:
        return level
    fitting = [t for t in thresholds if days_left <= t]
    return f"J-{min(fitting)}" if fitting else ""


def record_certificates(settings: Settings, session: Session, *, now: datetime, operators: list[str],
                        force: bool = False) -> list[Alert]:
    """At most once per CERT_EVERY (reading the PKCS#12 files costs more than a query)."""
    cursor = _cursor(session, "certificats")
    if not force and cursor.checked_at is not None and now - _aware(cursor.checked_at) < CERT_EVERY:
        return []
    cursor.checked_at = now
    from flows.pipeline.signing import certificate_alerts  # PKCS#12 files, and certificates on tokens

    config = settings.config
    thresholds = list(config.alerts.certificate_thresholds_days)
    owners = {f"{o.certificate}.p12": (c, o) for c in config.collectivites for o in c.officials}
    found_all, token_owners = certificate_alerts(settings, within_days=max(thresholds), at=now)
    owners |= token_owners
    out = []
    for found in found_all:
        bucket = _bucket(found.days_left, found.level, thresholds)
        if not bucket:
            continue
        coll, official = owners.get(found.source, (None, None))
        names = list(operators)
        if official is not None and found.usage == "de signature":
            names += official.users  # the official whose signature stops working
        expiry = found.not_after.date().isoformat() if found.not_after else "-"
        words = wording.certificate(subject=found.subject, usage=found.usage, level=found.level,
                                    message=found.message)
        alert = add_alert(session, key=_key("certificat", found.source, found.subject, expiry, bucket),
                          kind="certificat", recipients=names, words=words, now=now, certificate=found.source,
                          collectivite=coll.slug if coll else None)
        if alert is not None:
            out.append(alert)
    return out


# --------------------------------------------------------------------------------------------- all of them
def record_all(settings: Settings, *, now: datetime | None = None, operators: list[str] | tuple[str, ...] = (),
               certificates: bool = True) -> dict[str, int]:
    """One pass over every source; returns how many new alerts of each kind were recorded.

    Each source commits on its own: a failing certificate read does not lose the refusals found.
    """
    now = now or datetime.now(UTC)
    config = settings.config
    ops = who.operators(config, operators)
    counts: Counter[str] = Counter()
    with session_scope(settings.database_url) as session:
        lock(session, "demat-alerts-record")
        counts["refus"] += len(record_refusals(session, config, now=now, public_url=settings.public_url,
                                               operators=ops))
    with session_scope(settings.database_url) as session:
        lock(session, "demat-alerts-record")
        counts["bloque"] += len(record_stuck(settings, session, now=now, operators=ops))
        counts["echeance_parapheur"] += len(record_deadlines(session, config, now=now,
                                                             public_url=settings.public_url, operators=ops))
    if certificates:
        with session_scope(settings.database_url) as session:
            lock(session, "demat-alerts-record")
            counts["certificat"] += len(record_certificates(settings, session, now=now, operators=ops))
    recorded = {k: v for k, v in counts.items() if v}
    if recorded:
        log.info("Nouvelles alertes : %s", ", ".join(f"{k} {v}" for k, v in recorded.items()))
    return dict(counts)
