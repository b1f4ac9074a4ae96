"""Read-side queries on dossiers: search, filters, pagination, dashboard figures, visibility.

Pure SQLAlchemy (no Airflow), shared by the UI plugin and the business API. Every query takes a
`scope` (the collectivités the caller may see, None for all) so per-collectivité isolation is
applied in one place, in SQL, never after the fact in Python.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, and_, false, func, or_, select
from sqlalchemy.orm import Session

from flows.dossier import states
from flows.dossier.models import Artefact, Dossier, JournalEntry

MAX_PER_PAGE = 200

# Artefact kinds an agent downloads, with the French label shown in the UI and the API.
ARTEFACT_LABELS = {
    "original": "Document original",
    "signed": "Document signé",
    "transmission": "Envoi transmis",
    "prefecture_ARActe": "Accusé de réception (ARActe)",
    "acquit": "Acquittement (PES_ACQUIT)",
    "seda_package": "Paquet d'archive SEDA",
    "sae_reply": "Réponse du SAE",
    "quality_report_html": "Rapport qualité des tiers (HTML)",
    "quality_report_json": "Rapport qualité des tiers (JSON)",
    "validation_report": "Rapport de validation",
}
ACKNOWLEDGMENT_KINDS = ("prefecture_ARActe", "acquit")


def artefact_label(kind: str) -> str:
    if kind in ARTEFACT_LABELS:
        return ARTEFACT_LABELS[kind]
    if kind.startswith("prefecture_"):
        return f"Message de la préfecture ({kind.removeprefix('prefecture_')})"
    return kind


# --------------------------------------------------------------------------------------------- visibility
def visible_collectivites(config, user_id: str, *, operators: Iterable[str] = (), role: str | None = None
                          ) -> set[str] | None:
    """The collectivités a user may see: None means all (platform operators and admins).

    Agents, officials and VISA respondents (Collectivite.members) see their own collectivité(s);
    anyone else sees nothing (an empty set, not an error: the page is simply empty).
    """
    if user_id in set(operators) or role in ("admin", "op"):
        return None
    out: set[str] = set()
    for c in config.collectivites:
        if user_id in c.members():
            out.add(c.slug)
    return out


def _scoped(stmt: Select, scope: set[str] | None) -> Select:
    if scope is None:
        return stmt
    if not scope:
        return stmt.where(false())
    return stmt.where(Dossier.collectivite.in_(sorted(scope)))


# --------------------------------------------------------------------------------------------- search
@dataclass
class DossierFilter:
    collectivite: str | None = None
    flow: str | None = None
    state: str | None = None
    date_from: date | None = None  # created on or after (UTC day)
    date_to: date | None = None  # created on or before (UTC day, inclusive)
    idacte: str | None = None  # prefix match (IDActe are structured: 040-SIREN-DATE-...)
    nomfic: str | None = None  # prefix match
    objet: str | None = None  # case-insensitive substring
    text: str | None = None  # dossier id, file name, IDActe, NomFic or objet
    changed_since: datetime | None = None

    def is_empty(self) -> bool:
        return not any(getattr(self, f) for f in self.__dataclass_fields__)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _clean(value):
    """User-typed text without NUL bytes (PostgreSQL refuses them in a string literal)."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def apply_filter(stmt: Select, flt: DossierFilter) -> Select:
    from dataclasses import fields, replace

    flt = replace(flt, **{f.name: _clean(getattr(flt, f.name)) for f in fields(flt)})
    conds = []
    if flt.collectivite:
        conds.append(Dossier.collectivite == flt.collectivite)
    if flt.flow:
        conds.append(Dossier.flow == flt.flow)
    if flt.state:
        conds.append(Dossier.state == flt.state)
    if flt.date_from:
        conds.append(Dossier.created_at >= _day_start(flt.date_from))
    if flt.date_to:
        conds.append(Dossier.created_at < _day_start(flt.date_to + timedelta(days=1)))
    if flt.idacte:
        conds.append(Dossier.idacte.like(_like_escape(flt.idacte.strip()) + "%", escape="\\"))
    if flt.nomfic:
        conds.append(Dossier.nomfic.like(_like_escape(flt.nomfic.strip()) + "%", escape="\\"))
    if flt.objet:
        conds.append(Dossier.objet.ilike("%" + _like_escape(flt.objet.strip()) + "%", escape="\\"))
    if flt.text:
        t = flt.text.strip()
        pat = "%" + _like_escape(t) + "%"
        conds.append(or_(Dossier.id == t, Dossier.original_name.ilike(pat, escape="\\"),
                         Dossier.idacte == t, Dossier.nomfic == t, Dossier.objet.ilike(pat, escape="\\")))
    if flt.changed_since:
        conds.append(Dossier.updated_at >= flt.changed_since)
    return stmt.where(and_(*conds)) if conds else stmt


@dataclass
class Page:
    items: list[Dossier]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def search(session: Session, flt: DossierFilter | None = None, *, scope: set[str] | None = None, page: int = 1,
           per_page: int = 50, oldest_first: bool = False) -> Page:
    """One page of dossiers, newest first (created_at, then id so pages are stable)."""
    flt = flt or DossierFilter()
    page = max(1, int(page))
    per_page = max(1, min(MAX_PER_PAGE, int(per_page)))
    base = apply_filter(_scoped(select(Dossier), scope), flt)
    total = session.execute(
        apply_filter(_scoped(select(func.count()).select_from(Dossier), scope), flt)
    ).scalar_one()
    order = (Dossier.created_at.asc(), Dossier.id.asc()) if oldest_first else (Dossier.created_at.desc(),
                                                                               Dossier.id.desc())
    # journal and artefacts are selectin-loaded by the model; a list page needs neither
    from sqlalchemy.orm import lazyload

    rows = session.execute(
        base.options(lazyload(Dossier.journal), lazyload(Dossier.artefacts))
        .order_by(*order).offset((page - 1) * per_page).limit(per_page)
    ).scalars().all()
    return Page(list(rows), total, page, per_page)


def changed_since(session: Session, since: datetime, *, scope: set[str] | None = None, limit: int = 500,
                  after_id: str | None = None) -> list[Dossier]:
    """Dossiers whose state changed at or after `since`, oldest change first (for polling clients)."""
    from sqlalchemy.orm import lazyload

    stmt = _scoped(select(Dossier), scope).where(Dossier.updated_at >= since)
    if after_id:
        stmt = stmt.where(Dossier.id != after_id)
    stmt = stmt.options(lazyload(Dossier.journal), lazyload(Dossier.artefacts))
    return list(session.execute(stmt.order_by(Dossier.updated_at.asc(), Dossier.id.asc())
                                .limit(max(1, min(limit, 5000)))).scalars())


def get_visible(session: Session, dossier_id: str, *, scope: set[str] | None = None) -> Dossier | None:
    """The dossier if it exists AND the caller may see it (otherwise None: no existence leak)."""
    if not dossier_id or len(dossier_id) > 80 or "\x00" in dossier_id:  # cannot be an id; PostgreSQL refuses NUL
        return None
    return session.execute(_scoped(select(Dossier), scope).where(Dossier.id == dossier_id)).scalar_one_or_none()


def by_run_ids(session: Session, run_ids: Iterable[str]) -> dict[str, Dossier]:
    ids = [r for r in run_ids if r]
    if not ids:
        return {}
    from sqlalchemy.orm import lazyload

    rows = session.execute(select(Dossier).where(Dossier.run_id.in_(ids))
                           .options(lazyload(Dossier.journal), lazyload(Dossier.artefacts))).scalars()
    return {d.run_id: d for d in rows}


# --------------------------------------------------------------------------------------------- one dossier
@dataclass
class TimelineEntry:
    at: datetime
    event: str
    label: str  # the state reached, in French, or the event for a note
    actor: str
    message: str
    state: str | None
    refusal: bool = False


def timeline(dossier: Dossier) -> list[TimelineEntry]:
    out = []
    for e in dossier.journal:
        if e.state_to:
            st = states.STATES.get(e.state_to)
            label = states.label(e.state_to, dossier.flow) if st else e.state_to
            refusal = bool(st and st.refusal)
        else:
            label = _EVENT_LABELS.get(e.event, e.event.replace("_", " ").capitalize())
            refusal = False
        out.append(TimelineEntry(e.at, e.event, label, e.actor, e.message, e.state_to, refusal))
    return out


_EVENT_LABELS = {
    "approbation": "Approbation au parapheur",
    "parapheur_etape": "Étape suivante du parapheur",
    "alerte_parapheur": "Délai du parapheur dépassé",
    "attente": "En attente",
    "courrier": "Courrier de l'État",
    "alerte": "Alerte",
    "nouvelle_version": "Nouvelle version",
    "version_suivante": "Version corrigée déposée",
    "resoumission": "Version corrigée annoncée",
    "resoumission_perdue": "Version corrigée non reçue",
    "relance": "Relance par un opérateur",
    "reponse_agent": "Réponse à la préfecture",
    "reponse_refusee": "Réponse refusée",
    "annulation_demandee": "Annulation demandée",
}


def artefact_by_id(session: Session, dossier_id: str, artefact_id: int) -> Artefact | None:
    return session.execute(
        select(Artefact).where(Artefact.id == artefact_id, Artefact.dossier_id == dossier_id)
    ).scalar_one_or_none()


def latest_artefact(dossier: Dossier, kinds: Iterable[str]) -> Artefact | None:
    wanted = set(kinds)
    found = [a for a in dossier.artefacts if a.kind in wanted]
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------- dashboard
@dataclass
class Stuck:
    id: str
    collectivite: str
    flow: str
    state: str
    since: datetime
    hours: float


@dataclass
class Dashboard:
    total: int
    by_state: list[tuple[str, str, int]]  # (code, French label, count), declared order
    by_collectivite: list[tuple[str, int]]
    per_day: list[tuple[date, int]]  # every day of the window, zeros included
    stuck: list[Stuck]
    ack_median_hours: float | None
    ack_p95_hours: float | None
    ack_count: int
    extra: dict = field(default_factory=dict)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def dashboard(session: Session, *, scope: set[str] | None = None, stuck_after_hours: dict[str, float] | None = None,
              days: int = 30, now: datetime | None = None, stuck_limit: int = 100) -> Dashboard:
    now = now or datetime.now(UTC)
    stuck_after_hours = stuck_after_hours or {"actes": 4, "helios": 24, "sae": 24}
    counts = dict(session.execute(
        _scoped(select(Dossier.state, func.count()).group_by(Dossier.state), scope)).all())
    by_state = [(code, st.label, counts.get(code, 0)) for code, st in states.STATES.items() if counts.get(code)]
    by_coll = sorted(session.execute(
        _scoped(select(Dossier.collectivite, func.count()).group_by(Dossier.collectivite), scope)).all(),
        key=lambda r: (-r[1], r[0]))

    start_day = (now - timedelta(days=days - 1)).date()
    day_expr = func.date(Dossier.created_at) if session.bind.dialect.name != "postgresql" else \
        func.date(func.timezone("UTC", Dossier.created_at))
    raw = session.execute(
        _scoped(select(day_expr, func.count()).where(Dossier.created_at >= _day_start(start_day))
                .group_by(day_expr), scope)).all()
    per = {(d if isinstance(d, date) else date.fromisoformat(str(d))): n for d, n in raw}
    per_day = [(start_day + timedelta(days=i), per.get(start_day + timedelta(days=i), 0)) for i in range(days)]

    stuck: list[Stuck] = []
    rules = [("transmis", Dossier.transmitted_at, flow, stuck_after_hours.get(flow, 24)) for flow in ("actes", "helios")]
    rules.append(("depose_sae", Dossier.deposited_at, None, stuck_after_hours.get("sae", 24)))
    for state, col, flow, hours in rules:
        since_col = func.coalesce(col, Dossier.updated_at)
        stmt = _scoped(select(Dossier.id, Dossier.collectivite, Dossier.flow, Dossier.state, since_col), scope).where(
            Dossier.state == state, since_col < now - timedelta(hours=hours))
        if flow:
            stmt = stmt.where(Dossier.flow == flow)
        for i, coll, fl, st, since in session.execute(stmt.order_by(since_col.asc()).limit(stuck_limit)):
            since = _aware(since)
            stuck.append(Stuck(i, coll, fl, st, since, round((now - since).total_seconds() / 3600, 1)))
    stuck.sort(key=lambda s: s.since)

    median, p95, n = _ack_delays(session, scope)
    return Dashboard(sum(counts.values()), by_state, [(c, n_) for c, n_ in by_coll], per_day, stuck[:stuck_limit],
                     median, p95, n)


def _ack_delays(session: Session, scope: set[str] | None) -> tuple[float | None, float | None, int]:
    """Drop-to-acknowledgment delay (created_at -> acknowledged_at), median and p95, in hours."""
    cond = (Dossier.acknowledged_at.is_not(None),)
    if session.bind.dialect.name == "postgresql":
        secs = func.extract("epoch", Dossier.acknowledged_at - Dossier.created_at)
        row = session.execute(_scoped(select(
            func.percentile_cont(0.5).within_group(secs), func.percentile_cont(0.95).within_group(secs), func.count()
        ).where(*cond), scope)).one()
        if not row[2]:
            return None, None, 0
        return round(float(row[0]) / 3600, 3), round(float(row[1]) / 3600, 3), int(row[2])
    rows = session.execute(_scoped(select(Dossier.created_at, Dossier.acknowledged_at).where(*cond), scope)).all()
    values = sorted((_aware(b) - _aware(a)).total_seconds() for a, b in rows)
    if not values:
        return None, None, 0
    p95 = values[0] if len(values) == 1 else statistics.quantiles(values, n=100, method="inclusive")[94]
    return round(statistics.median(values) / 3600, 3), round(p95 / 3600, 3), len(values)


def recent_journal(session: Session, *, scope: set[str] | None = None, limit: int = 20) -> list[JournalEntry]:
    stmt = select(JournalEntry).join(Dossier, Dossier.id == JournalEntry.dossier_id)
    stmt = _scoped(stmt, scope)
    return list(session.execute(stmt.order_by(JournalEntry.id.desc()).limit(limit)).scalars())
