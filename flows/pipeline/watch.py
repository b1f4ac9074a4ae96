"""Silence watch: dossiers waiting on the State or the archive past their threshold.

A stuck dossier gets one "alerte" journal entry per waiting state (not one per check), is listed in
the daily report, and resumes normally if the answer comes later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from flows.dossier import service, states
from flows.dossier.db import session_scope
from flows.dossier.models import Dossier, JournalEntry
from flows.settings import Settings

WAITING = {"transmis": "etat", "depose_sae": "sae"}


@dataclass(frozen=True)
class Stuck:
    dossier_id: str
    collectivite: str
    flow: str
    state: str
    since: datetime
    hours: float
    threshold: float

    def message(self) -> str:
        who = "l'accusé de réception de la préfecture" if self.flow == "actes" else "le PES_ACQUIT de la DGFiP"
        if self.state == "depose_sae":
            who = "la réponse du SAE"
        return (f"Dossier {self.dossier_id} ({self.collectivite}) en attente depuis {self.hours:.1f} h "
                f"(seuil {self.threshold:g} h) : {who} n'est pas arrivé(e). État : {states.label(self.state, self.flow)}.")


def threshold_hours(settings: Settings, flow: str, state: str) -> float:
    key = "sae" if state == "depose_sae" else flow
    return float(settings.config.stuck_after_hours.get(key, 24))


def find_stuck(settings: Settings, *, now: datetime | None = None) -> list[Stuck]:
    now = now or datetime.now(UTC)
    out: list[Stuck] = []
    with session_scope(settings.database_url) as session:
        rows = session.execute(select(Dossier).where(Dossier.state.in_(list(WAITING)))).scalars()
        for d in rows:
            since = d.updated_at if d.updated_at.tzinfo else d.updated_at.replace(tzinfo=UTC)
            hours = (now - since).total_seconds() / 3600
            limit = threshold_hours(settings, d.flow, d.state)
            if hours >= limit:
                out.append(Stuck(d.id, d.collectivite, d.flow, d.state, since, hours, limit))
    return out


def alert_stuck(settings: Settings, *, now: datetime | None = None) -> list[Stuck]:
    """Record one alert per stuck dossier and waiting state; return the newly alerted ones."""
    fresh: list[Stuck] = []
    for s in find_stuck(settings, now=now):
        with session_scope(settings.database_url) as session:
            dossier = service.get(session, s.dossier_id, for_update=True)
            if dossier.state != s.state:
                continue
            already = session.execute(
                select(JournalEntry.id).where(
                    JournalEntry.dossier_id == s.dossier_id, JournalEntry.event == "alerte_silence",
                    JournalEntry.at >= s.since - timedelta(seconds=1),
                )
            ).first()
            if already:
                continue
            dossier.waiting_reason = s.message()
            service.note(session, dossier, event="alerte_silence", message=s.message(),
                         details={"state": s.state, "hours": round(s.hours, 2), "threshold": s.threshold})
            fresh.append(s)
    return fresh
