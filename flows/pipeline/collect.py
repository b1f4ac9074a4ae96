"""Batch collection of the counterparts' replies (ARActe and anomalies, PES_ACQUIT, SAE replies).

Each reply is processed once: its sha256 is recorded with the outcome in the same transaction as
the dossier's move, and only then is the remote file moved to `traites/`. A crash in between
leaves the file in place; the next batch sees the recorded sha256 and only finishes the move.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tarfile
import zipfile
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.models import Dossier, InboundMessage
from flows.dossier.store import ArtefactStore
from flows.findings import UnreadableFile
from flows.pipeline import helios_returns
from flows.settings import Settings

log = logging.getLogger(__name__)
DONE_DIR = "traites"
# what a reply's content can raise (the domain's refusals are ValueErrors; lxml's are SyntaxErrors):
# such a reply is recorded as unreadable and set aside; anything else is demat's fault and retried
UNREADABLE = (ValueError, SyntaxError, UnicodeError, EOFError, tarfile.TarError, zipfile.BadZipFile, UnreadableFile)


@dataclass
class CollectResult:
    seen: int = 0
    processed: int = 0
    unmatched: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # dossier ids moved to a new state


def _already(session, counterpart: str, sha: str) -> bool:
    return session.execute(
        select(InboundMessage.id).where(InboundMessage.counterpart == counterpart, InboundMessage.sha256 == sha)
    ).first() is not None


def _record(session, counterpart: str, name: str, sha: str, dossier_id: str | None, outcome: str) -> None:
    session.add(InboundMessage(counterpart=counterpart, name=name, sha256=sha, dossier_id=dossier_id,
                               outcome=outcome, processed_at=service.now()))


def collect(settings: Settings, counterpart: str, endpoint_factory, reply_dir: str = "retour") -> CollectResult:
    from flows.pipeline.prefecture import handle_prefecture_reply

    prefecture = functools.partial(handle_prefecture_reply, inbox_root=settings.inbox_root)
    handler = {"prefecture": prefecture, "dgfip": _handle_dgfip, "sae": _handle_sae}[counterpart]
    store = ArtefactStore(settings.store_root)
    result = CollectResult()
    failures: list[str] = []
    with endpoint_factory(counterpart) as ep:
        for name in ep.listdir(reply_dir):
            result.seen += 1
            path = f"{reply_dir}/{name}"
            data = ep.read(path)
            sha = hashlib.sha256(data).hexdigest()
            with session_scope(settings.database_url) as session:
                if not _already(session, counterpart, sha):
                    try:
                        with session.begin_nested():  # a reply half applied is not applied at all
                            dossier_ids = handler(session, store, name, data)
                    except SQLAlchemyError:
                        raise  # the database, not the reply: the batch is retried
                    except UNREADABLE as exc:  # a malformed reply must not block the others
                        log.exception("Réponse illisible %s de %s", name, counterpart)
                        store.put(data)  # kept (by its sha256) for whoever looks into it
                        _record(session, counterpart, name, sha, None, f"illisible: {exc}"[:32])
                        dossier_ids = []
                    except Exception as exc:  # noqa: BLE001 - demat's own fault: the reply stays for the next pass
                        log.exception("Réponse %s de %s non traitée (erreur de demat, nouvel essai au prochain passage)",
                                      name, counterpart)
                        failures.append(f"{name} ({type(exc).__name__})")
                        continue
                    else:
                        _record(session, counterpart, name, sha, dossier_ids[0] if dossier_ids else None,
                                "ok" if dossier_ids else "non rapproché")
                    if dossier_ids:
                        result.processed += 1
                        result.moved.extend(dossier_ids)
                    else:
                        result.unmatched.append(name)
            ep.mkdir_p(f"{reply_dir}/{DONE_DIR}")
            ep.move(path, f"{reply_dir}/{DONE_DIR}/{name}")
    if failures:
        raise RuntimeError(f"{len(failures)} réponse(s) de « {counterpart} » laissée(s) en place après une erreur de "
                           f"demat (les autres sont traitées) : {', '.join(failures[:10])}")
    return result


# --------------------------------------------------------------------------------------------- DGFiP
def _handle_dgfip(session, store: ArtefactStore, name: str, data: bytes) -> list[str]:
    from flows.helios.acquit import parse_acquit

    if b"PES_Retour" in data[:4096]:
        return _handle_retour(session, store, name, data)
    acquit = parse_acquit(data)
    dossier = session.execute(
        select(Dossier).where(Dossier.flow == "helios", Dossier.nomfic == acquit.nomfic,
                              Dossier.state.in_(["transmis", "acquitte", "refuse_etat", "depose_sae", "archive"]))
        .order_by(Dossier.created_at.desc())
    ).scalars().first()
    store.put(data)  # matched or not, the collectivité lists and downloads it
    helios_returns.record_return(session, kind="PES_ACQUIT", siren=(acquit.idcoll or "")[:9], name=name,
                                 sha256=hashlib.sha256(data).hexdigest(), size=len(data), nomfic=acquit.nomfic,
                                 summary=acquit.summary_fr, dossier_ids=[dossier.id] if dossier is not None else [])
    if dossier is None:
        return []
    service.attach(session, store, dossier, kind="acquit", name=name, data=data, media_type="application/xml")
    deviations = _acquit_deviations(data)
    if deviations:  # the State's answer is kept and applied, but an operator is told it is not as Hélios writes it
        service.note(session, dossier, event="acquit_non_conforme", actor="demat",
                     message=f"L'acquit « {name} » ne respecte pas le schéma PES_ACQUIT : " + " ; ".join(deviations[:3])
                     + ". Son verdict est appliqué ; signalez-le à l'opérateur si le dossier semble mal acquitté.",
                     details={"ecarts": deviations[:20]})
    if dossier.state == "transmis":
        if acquit.accepted:
            dossier.acknowledged_at = service.now()
            service.transition(session, dossier, "acquitte", actor="DGFiP", event="PES_ACQUIT",
                               message=f"PES_ACQUIT reçu : fichier accepté par la DGFiP. {acquit.summary_fr}".strip())
        else:
            service.transition(session, dossier, "refuse_etat", actor="DGFiP", event="PES_ACQUIT",
                               message=f"PES_ACQUIT reçu : fichier refusé par la DGFiP. {acquit.summary_fr}".strip())
    return [dossier.id]


def _acquit_deviations(data: bytes) -> list[str]:
    """What in an acquit departs from the PES_ACQUIT schema (French), empty when it conforms."""
    from flows import xmlsafe
    from flows.helios.acquit import acquit_schema
    from flows.helios.xsdtext import xsd_parts

    schema = acquit_schema()
    if schema.validate(xmlsafe.parse_bytes(data)):
        return []
    return [xsd_parts(e.message)[2] for e in schema.error_log]


def _handle_retour(session, store: ArtefactStore, name: str, data: bytes) -> list[str]:
    """A PES_Retour (Hélios' feedback on mandats and titres) joins every dossier of that collectivité
    whose PES_Aller carried one of the bordereaux it names (exercice and IdBord), found through the
    bordereau index (flows.pipeline.helios_returns); kept for the collectivité's list in any case."""
    from flows.helios.acquit import parse_retour

    retour = parse_retour(data)
    named = {f"{b['exercice']}:{b['idbord']}" for b in retour["bordereaux"] if b["idbord"]}
    siren = (retour["idcoll"] or "")[:9]
    if not siren:
        return []
    matched = helios_returns.dossiers_for(session, siren, named) if named else []  # indexed, no scan
    for dossier, mine in matched:
        service.attach(session, store, dossier, kind="pes_retour", name=name, data=data, media_type="application/xml")
        service.note(session, dossier, event="PES_Retour", actor="DGFiP",
                     message=f"{retour['summary_fr'].strip()} Bordereau(x) de ce dossier concerné(s) : {', '.join(mine)}.",
                     details={"bordereaux": mine, "nomfic_retour": retour["nomfic"]})
    store.put(data)  # matched or not, the collectivité lists and downloads it
    helios_returns.record_return(session, kind="PES_Retour", siren=siren, name=name,
                                 sha256=hashlib.sha256(data).hexdigest(), size=len(data), nomfic=retour["nomfic"],
                                 summary=retour["summary_fr"].strip(), dossier_ids=[d.id for d, _ in matched])
    return [d.id for d, _ in matched]


# --------------------------------------------------------------------------------------------- SAE
def _handle_sae(session, store: ArtefactStore, name: str, data: bytes) -> list[str]:
    from flows.archive.replies import parse_reply

    reply = parse_reply(data)
    ids = {i for i in (getattr(reply, "message_received_identifier", None),
                       getattr(reply, "message_request_identifier", None),
                       getattr(reply, "message_identifier", None)) if i}
    if not ids:
        return []
    dossier = session.execute(
        select(Dossier).where(or_(*[Dossier.message_identifier == i for i in ids]))
    ).scalars().first()
    if dossier is None:
        return []
    # parse again knowing our identifier: some systems swap the identifiers of their reply
    reply = parse_reply(data, our_message_identifier=dossier.message_identifier)
    kind = "sae_reply" if reply.final else "sae_ack"
    service.attach(session, store, dossier, kind=kind, name=name, data=data, media_type="application/xml")
    if not reply.final:
        service.note(session, dossier, event="Acknowledgement", actor="SAE",
                     message="Accusé de réception du SAE : le paquet est pris en charge.")
    elif dossier.state == "depose_sae":
        if reply.accepted:
            dossier.archive_id = reply.archive_id
            dossier.archived_at = service.now()
            service.transition(session, dossier, "archive", actor="SAE", event="ArchiveTransferReply",
                               message=f"Archivé par le SAE (identifiant d'archive : {reply.archive_id}).")
        else:
            sent = (dossier.extra or {}).get("archive") or {}
            hint = ""
            if str(reply.reply_code).startswith("3") and sent.get("archival_agreement"):
                hint = (f" Accord de versement envoyé : « {sent['archival_agreement']} »"
                        + (f", profil « {sent['archival_profile']} »" if sent.get("archival_profile") else "")
                        + " : vérifiez-les avec le service d'archives puis corrigez le profil d'archivage de la "
                        "collectivité ; un opérateur peut ensuite redéposer le paquet.")
            service.transition(session, dossier, "refuse_sae", actor="SAE", event="ArchiveTransferReply",
                               message=f"Refusé par le SAE (code {reply.reply_code}) : {reply.reason_fr}{hint}")
    return [dossier.id]
