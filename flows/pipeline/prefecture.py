"""The préfecture's messages: matched to their dossier by IDActe and applied, in French.

One archive from the ministère may carry several messages; each is applied in its own savepoint
so that one unreadable or unexpected message does not undo the others. Every message lands in
the dossier's journal with `ActesMessage.summary_fr` (what happened, what to do):
- ARActe (1-2) -> "acquitte" with the date of reception, the stamped acte and the accusé de
  réception PDF (flows.pipeline.publication); AnomalieActe (1-3) -> "refuse_etat" with
  the nature explained; AnomalieEnveloppe -> "refuse_etat" when it refuses the acte itself, else the
  refused answer / annulation / classification request is marked so (any nature code is read);
- courrier simple 2-1, demande de pièces 3-1, lettre d'observations 4-1, déféré 5-1 -> recorded,
  agent alerted, reply folder opened (flows.pipeline.answers);
- ARPieceComplementaire 3-5, ARReponseRejetLettreObservations 4-5 -> the answer is acknowledged;
- ARAnnulation 6-2 -> "annule";
- RetourClassification 7-2 / sans changement 7-3 -> stored (flows.pipeline.classification).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from flows.dossier import service, states
from flows.dossier.models import Dossier
from flows.dossier.store import ArtefactStore

log = logging.getLogger(__name__)

_FROM_ENV = object()
COURRIERS = ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations", "DefereTA")
ACKS = ("ARPieceComplementaire", "ARReponseRejetLettreObservations")
CLASSIFICATION = ("RetourClassification", "ReponseClassificationSansChangement")


def handle_prefecture_reply(session, store: ArtefactStore, name: str, data: bytes, *,
                            inbox_root: Path | None | object = _FROM_ENV) -> list[str]:
    """Apply one archive from the préfecture. Returns the ids of the dossiers it concerned
    (empty for a classification, which concerns a collectivité, or when nothing matched)."""
    from flows.actes.messages import read_archive

    if inbox_root is _FROM_ENV:
        from flows.settings import Settings

        inbox_root = Settings.from_env().inbox_root
    archive = read_archive(data, name)
    sha = hashlib.sha256(data).hexdigest()
    envelope_siren = archive.envelope.siren if archive.envelope is not None else ""
    documents = {m.rsplit("/", 1)[-1]: content for m, content in archive.documents.items()}
    touched: list[str] = []
    failures: list[str] = []
    applied = 0
    for msg in archive.messages:
        try:
            with session.begin_nested():
                ids = _apply(session, store, msg, name=name, data=data, sha=sha, siren=envelope_siren or msg.siren,
                             documents=documents, inbox_root=inbox_root)
        except SQLAlchemyError:  # the database, not the message: fail the batch, it is retried
            raise
        except Exception as exc:  # noqa: BLE001 - one message must not undo the others
            log.exception("message %s de %s non appliqué", msg.name, name)
            failures.append(f"{msg.name}: {exc}")
            continue
        applied += 1
        touched.extend(i for i in ids if i not in touched)
    if failures and not applied:
        raise ValueError("aucun message de l'archive n'a pu être appliqué : " + " ; ".join(failures)[:500])
    for dossier_id in touched if archive.notes else ():  # files no message cites: kept, and said
        service.note(session, service.get(session, dossier_id), event="archive_prefecture_remarque",
                     actor="demat", message=f"Archive « {name} » de la préfecture : " + " ; ".join(archive.notes[:5]),
                     details={"remarques": archive.notes[:20]})
    return touched


def _config():
    """The platform's configuration (collectivité names, publication settings), None if unreadable."""
    try:
        from flows.settings import Settings

        return Settings.from_env().config
    except Exception:  # noqa: BLE001 - the stamp falls back to what the dossier knows
        return None


def _find_dossier(session, idacte: str) -> Dossier | None:
    """The acte's dossier: several may share an IDActe (a refused acte sent again); the latest sent wins."""
    if not idacte:
        return None
    stmt = (select(Dossier).where(Dossier.idacte == idacte, Dossier.flow == "actes")
            .order_by(Dossier.transmitted_at.desc().nulls_last(), Dossier.created_at.desc()).limit(1))
    if session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalars().first()


def _artefact_kind(msg) -> str:
    kind = f"prefecture_{msg.kind}"
    return kind if len(kind) <= 32 else f"prefecture_{msg.code or msg.kind[:20]}"


def _move(session, dossier: Dossier, target: str, msg, *, event: str, details: dict) -> bool:
    """Transition when the declared machine allows it, else a journal note (nothing is lost)."""
    if dossier.state != target and states.allowed(dossier.flow, dossier.state, target):
        return service.transition(session, dossier, target, actor="préfecture", message=msg.summary_fr,
                                  event=event, details=details)
    suffix = "" if dossier.state == target else f" (dossier déjà « {states.label(dossier.state, dossier.flow)} »)"
    service.note(session, dossier, event=event, actor="préfecture", message=msg.summary_fr + suffix, details=details)
    return False


def _apply(session, store, msg, *, name, data, sha, siren, documents, inbox_root) -> list[str]:
    from flows.pipeline import answers

    kind = msg.kind
    if kind in CLASSIFICATION:
        from flows.pipeline.classification import record_classification

        if not siren:
            raise ValueError("classification reçue sans SIREN destinataire")
        _, created = record_classification(session, siren, msg, name)
        log.info("classification %s du %s pour %s (%s)", msg.code, msg.date, siren, "nouvelle" if created else "déjà reçue")
        return []
    if kind == "AnomalieEnveloppe":
        return _anomalie_enveloppe(session, store, msg, name=name, data=data, siren=siren)

    dossier = _find_dossier(session, msg.idacte)
    if dossier is None:
        log.warning("message %s (%s) pour l'acte %s : aucun dossier", msg.name, kind, msg.idacte or "?")
        return []
    service.attach(session, store, dossier, kind=_artefact_kind(msg), name=name, data=data,
                   media_type="application/gzip")
    base = {"code": msg.code, "message": msg.name, "archive": name}
    if kind == "ARActe":
        first = dossier.state == "transmis"
        stamped: dict = {}
        if first:
            from flows.pipeline import publication

            dossier.acknowledged_at = service.now()
            config = _config()
            stamped = publication.on_acknowledgment(session, store, dossier, msg.date, config=config)
        _move(session, dossier, "acquitte" if first else dossier.state, msg, event="ARActe",
              details={**base, "date_reception": str(msg.date or ""), **stamped})
        if first:
            publication.auto_publish(session, store, dossier, config=config)
    elif kind == "AnomalieActe":
        details = {**base, "date": str(msg.date or ""), "nature": msg.nature, "nature_label": msg.nature_label,
                   "detail": msg.detail}
        _move(session, dossier, "refuse_etat" if dossier.state == "transmis" else dossier.state, msg,
              event="AnomalieActe", details=details)
    elif kind in COURRIERS:
        wanted = {d: documents[d] for d in msg.documents if d in documents}
        answers.record_courrier(session, store, dossier, msg, archive_name=name, archive_sha256=sha,
                                documents=wanted, inbox_root=inbox_root)
    elif kind == "ARAnnulation":
        envoi = answers.record_acknowledgment(session, dossier, msg)
        details = {**base, "date_reception": str(msg.date or ""), "envoi": envoi.name if envoi else ""}
        _move(session, dossier, "annule", msg, event="ARAnnulation", details=details)
    elif kind in ACKS:
        envoi = answers.record_acknowledgment(session, dossier, msg)
        what = f" (réponse {envoi.code} « {envoi.name} »)" if envoi else " (aucune réponse envoyée correspondante trouvée)"
        service.note(session, dossier, event=kind, actor="préfecture", message=msg.summary_fr + what,
                     details={**base, "date_reception": str(msg.date or ""),
                              "date_courrier": str(msg.date_courrier_pref or ""), "envoi": envoi.name if envoi else ""})
    else:
        service.note(session, dossier, event=kind, actor="préfecture", message=msg.summary_fr, details=base)
    return [dossier.id]


def _anomalie_enveloppe(session, store, msg, *, name, data, siren) -> list[str]:
    """Which of our envelopes was refused: an acte (1-1), an answer or annulation, a classification request."""
    from flows.actes import naming
    from flows.pipeline import answers

    received = msg.extra.get("formulaires_recus", [])
    details = {"code": "AnomalieEnveloppe", "nature": msg.nature, "nature_label": msg.nature_label,
               "detail": msg.detail, "formulaires": received, "archive": name}
    touched: list[str] = []
    envoi = answers.envoi_by_message_name(session, received)
    if envoi is not None:
        answers.refuse_envoi(session, envoi)
        dossier = service.get(session, envoi.dossier_id, for_update=True)
        service.attach(session, store, dossier, kind=_artefact_kind(msg), name=name, data=data,
                       media_type="application/gzip")
        service.note(session, dossier, event="AnomalieEnveloppe", actor="préfecture",
                     message=f"{msg.summary_fr} Message refusé : {answers.ANSWER_LABELS.get(envoi.kind, envoi.kind)} "
                             f"({envoi.name}) : il n'est pas parvenu à la préfecture.", details=details)
        return [dossier.id]
    idactes: list[str] = []
    for n in received:
        parts = naming.parse_file_name(n)
        if parts and parts["idacte"] and parts["code"] == "1-1" and parts["idacte"] not in idactes:
            idactes.append(parts["idacte"])
        elif parts and parts["code"] == "7-1":
            from flows.pipeline.classification import mark_request_refused

            mark_request_refused(session, parts["siren"] or siren, f"{msg.nature} {msg.nature_label} {msg.detail}")
    if not idactes and msg.idacte:
        idactes = list(msg.extra.get("idactes") or [msg.idacte])
    for idacte in idactes:
        dossier = _find_dossier(session, idacte)
        if dossier is None:
            continue
        service.attach(session, store, dossier, kind=_artefact_kind(msg), name=name, data=data,
                       media_type="application/gzip")
        _move(session, dossier, "refuse_etat" if dossier.state == "transmis" else dossier.state, msg,
              event="AnomalieEnveloppe", details=details)
        touched.append(dossier.id)
    return touched
