"""After the ARActe: the stamped acte, the accusé de réception PDF, and the electronic publication.

When the préfecture acknowledges an acte (flows.pipeline.prefecture), `after_acknowledgment`
records two NEW artefacts (the signed original is never touched): `acte_tamponne`, the acte's PDF
with the legal stamp (flows.actes.stamp), and `accuse_reception`, a readable PDF receipt. If the
collectivité's configuration publishes this nature once acknowledged (`publication_auto`), the
acte is published at once.

Publication (the rule for collectivités since 1 July 2022, ordonnance 2021-1310): `publish`
records a row in `acte_publication` (what the public may see and nothing else: IDActe, nature,
objet, decision date, publication date, the stamped PDF with "Publié le …"), journals the
publication date, and the public page reads ONLY that table: a dossier never published is not
in it, so it can never leak.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from sqlalchemy import Date, DateTime, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.dossier import service
from flows.dossier.db import ensure_tables
from flows.dossier.models import Artefact, Base, Dossier
from flows.dossier.store import ArtefactStore

log = logging.getLogger(__name__)

STAMPED, STAMPED_PUBLISHED, RECEIPT = "acte_tamponne", "acte_tamponne_publie", "accuse_reception"
PUBLISHABLE = ("acquitte", "depose_sae", "archive", "refuse_sae")
NATURE_LABELS = {"DE": "Délibération", "AR": "Arrêté réglementaire", "AI": "Arrêté individuel",
                 "CC": "Contrat, convention ou avenant", "BF": "Document budgétaire ou financier", "AU": "Autre"}


class Publication(Base):
    """A published acte: exactly what the public page shows."""

    __tablename__ = "acte_publication"

    dossier_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    collectivite: Mapped[str] = mapped_column(String(64), index=True)
    idacte: Mapped[str] = mapped_column(String(64))
    nature: Mapped[str] = mapped_column(String(4), index=True)
    objet: Mapped[str] = mapped_column(Text)
    date_decision: Mapped[date | None] = mapped_column(Date, nullable=True)
    published_on: Mapped[date] = mapped_column(Date, index=True)
    stamped_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stamped_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def ensure_schema(session: Session) -> None:
    ensure_tables(session, "actes-publication", [Publication.__table__])


class NotPublishable(ValueError):
    """French reason why this dossier cannot be published."""


def _facts(store: ArtefactStore, dossier: Dossier):
    """The acte's main document (signed PDF if PAdES) and its metadata, from the recorded artefacts."""
    from flows.actes.intake import read_submission

    submission = read_submission(store.get(dossier.sha256))
    signed = [a for a in dossier.artefacts if a.kind == "signed" and a.media_type == "application/pdf"]
    if signed:
        return signed[-1].name, store.get(signed[-1].sha256), submission.metadata
    return submission.document.name, submission.document.data, submission.metadata


def _received(dossier: Dossier) -> date | None:
    text = (dossier.extra or {}).get("date_reception")
    if text:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return dossier.acknowledged_at.date() if dossier.acknowledged_at else None


def _collectivite(config, slug: str):
    try:
        return config.collectivite(slug) if config is not None else None
    except KeyError:
        return None


def stamp_artefacts(session: Session, store: ArtefactStore, dossier: Dossier, *, config=None,
                    published: date | None = None) -> list[Artefact]:
    """The stamped PDF (with "Publié le" when `published`) and the receipt, recorded once each."""
    from flows.actes.stamp import Receipt, receipt_pdf, stamp_lines, stamp_pdf

    name, pdf, meta = _facts(store, dossier)
    received = _received(dossier)
    if received is None:
        raise NotPublishable("l'acte n'a pas encore d'accusé de réception de la préfecture")
    kind = STAMPED_PUBLISHED if published else STAMPED
    stem = name.rsplit(".", 1)[0]
    out: list[Artefact] = []
    existing = [a for a in dossier.artefacts if a.kind == kind]
    if existing:  # the stamp's bytes carry a random /ID: recorded once, by kind
        out.append(existing[-1])
    elif name.lower().endswith(".pdf"):
        data = stamp_pdf(pdf, stamp_lines(dossier.idacte or "", received, published))
        prefix = "publie-" if published else "tamponne-"
        out.append(service.attach(session, store, dossier, kind=kind, name=f"{prefix}{stem}.pdf"[:255], data=data,
                                  media_type="application/pdf"))
    coll = _collectivite(config, dossier.collectivite)
    receipt = Receipt(collectivite=coll.name if coll else dossier.collectivite, siren=dossier.siren or
                      (coll.siren if coll else ""), idacte=dossier.idacte or "",
                      nature=NATURE_LABELS.get(meta.nature, meta.nature), objet=meta.objet,
                      numero_interne=meta.numero_interne, date_decision=meta.date_decision,
                      date_transmission=dossier.transmitted_at.date() if dossier.transmitted_at else None,
                      date_reception=received, date_publication=published)
    out.append(service.attach(session, store, dossier, kind=RECEIPT, name=f"accuse-reception-{dossier.idacte}.pdf",
                              data=receipt_pdf(receipt), media_type="application/pdf"))
    return out


def on_acknowledgment(session: Session, store: ArtefactStore, dossier: Dossier, received: date | None,
                      *, config=None) -> dict:
    """Called when the ARActe is applied, before its journal entry: the stamped acte and the receipt.
    Returns what to add to that entry's details. Never fails the ARActe: a problem is journaled."""
    extra = dict(dossier.extra or {})
    if received is not None:
        extra["date_reception"] = received.isoformat()
        dossier.extra = extra
    try:
        with session.begin_nested():
            made = stamp_artefacts(session, store, dossier, config=config)
    except Exception as exc:  # noqa: BLE001 - the acknowledgment itself must stand
        from flows.actes.stamp import StampError

        log.warning("tampon de l'acte %s impossible : %s", dossier.idacte, exc)
        why = str(exc) if isinstance(exc, StampError | NotPublishable) else (
            f"le document de l'acte n'a pas pu être relu ({type(exc).__name__})")
        service.note(session, dossier, event="tampon_impossible", actor="demat",
                     message=f"Acte tamponné non produit : {why}. L'accusé de réception (ARActe) reste valable ; "
                             "signalez-le à l'opérateur si le PDF de l'acte doit être publié.")
        return {}
    return {"acte_tamponne": [a.name for a in made]}


def auto_publish(session: Session, store: ArtefactStore, dossier: Dossier, *, config=None) -> bool:
    """Publish now if the collectivité publishes this nature once acknowledged (`publication_auto`)."""
    coll = _collectivite(config, dossier.collectivite)
    auto = getattr(coll, "publication_auto", None) or []
    if not auto or _nature(store, dossier) not in auto:
        return False
    try:
        with session.begin_nested():
            publish(session, store, dossier, actor="demat (publication automatique)", config=config)
    except Exception as exc:  # noqa: BLE001 - the acknowledgment itself must stand
        log.warning("publication automatique de %s impossible : %s", dossier.idacte, exc)
        service.note(session, dossier, event="publication_impossible", actor="demat",
                     message=f"Publication automatique non faite ({type(exc).__name__}) : publiez l'acte depuis "
                             "sa page quand le problème est corrigé.")
        return False
    return True


def _nature(store: ArtefactStore, dossier: Dossier) -> str:
    try:
        return _facts(store, dossier)[2].nature
    except Exception:  # noqa: BLE001
        return ""


def publish(session: Session, store: ArtefactStore, dossier: Dossier, *, actor: str, config=None,
            on: date | None = None) -> tuple[Publication, bool]:
    """Publish an acknowledged acte (idempotent: published once, the date kept). Returns (row, created)."""
    ensure_schema(session)
    row = session.get(Publication, dossier.id)
    if row is not None:
        return row, False
    if dossier.flow != "actes":
        raise NotPublishable("seuls les actes se publient")
    if dossier.state not in PUBLISHABLE:
        raise NotPublishable(f"l'acte n'est pas reçu en préfecture (état « {dossier.state} ») : on ne publie qu'un "
                             "acte dont la préfecture a accusé réception")
    on = on or service.now().date()
    made = stamp_artefacts(session, store, dossier, config=config, published=on)
    _, _, meta = _facts(store, dossier)
    stamped = next((a for a in made if a.kind == STAMPED_PUBLISHED), None)
    row = Publication(dossier_id=dossier.id, collectivite=dossier.collectivite, idacte=dossier.idacte or "",
                      nature=meta.nature, objet=meta.objet, date_decision=meta.date_decision, published_on=on,
                      stamped_sha256=stamped.sha256 if stamped else None, stamped_name=stamped.name if stamped else None,
                      actor=actor[:128], recorded_at=service.now())
    session.add(row)
    service.note(session, dossier, event="publication", actor=actor,
                 message=f"Acte publié le {on:%d/%m/%Y} par {actor} : visible sur la page publique des actes de la "
                         "collectivité, avec le PDF tamponné « Publié le … ».",
                 details={"publie_le": on.isoformat(), "pdf": row.stamped_name})
    session.flush()
    return row, True


# --------------------------------------------------------------------------------------------- public listing
MAX_RESULTS = 200


def public_list(session: Session, collectivite: str, *, du: date | None = None, au: date | None = None,
                nature: str | None = None, objet: str | None = None, limit: int = 50, offset: int = 0
                ) -> tuple[int, list[Publication]]:
    """Published actes of one collectivité, newest first, bounded (never more than MAX_RESULTS)."""
    from sqlalchemy import func

    ensure_schema(session)
    stmt = select(Publication).where(Publication.collectivite == collectivite)
    if du:
        stmt = stmt.where(Publication.published_on >= du)
    if au:
        stmt = stmt.where(Publication.published_on <= au)
    if nature:
        stmt = stmt.where(Publication.nature == nature)
    if objet:
        like = "%" + objet.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(Publication.objet.ilike(like, escape="\\"))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.execute(stmt.order_by(Publication.published_on.desc(), Publication.idacte)
                           .limit(max(1, min(limit, MAX_RESULTS))).offset(max(0, offset))).scalars().all()
    return int(total or 0), list(rows)
