"""Archive deposit: one SEDA package per acknowledged dossier, sent once to the SAE.

The package is built deterministically and recorded (artefact + MessageIdentifier) before the
upload; a retry re-sends the same bytes under the same name, which the atomic upload recognises.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC

from sqlalchemy import select

from flows.dossier import service, states
from flows.dossier.db import session_scope
from flows.dossier.models import Dossier
from flows.dossier.store import ArtefactStore
from flows.pipeline.send import upload_recorded, waiting_reason
from flows.settings import Settings
from flows.transport.errors import TransientError

log = logging.getLogger(__name__)

ROLES = {
    "original": "document",
    "signed": "signature",
    "signature": "signature",
    "transmission": "document",
    "acquit": "acquittement",
    "prefecture_ARActe": "acquittement",
    "quality_report_html": "rapport",
    "validation_report": "rapport",
}


def _journal_json(dossier: Dossier) -> bytes:
    entries = [
        {
            "date": e.at.astimezone(UTC).isoformat(), "evenement": e.event, "de": e.state_from, "vers": e.state_to,
            "etat": states.label(e.state_to, dossier.flow) if e.state_to else None, "acteur": e.actor,
            "message": e.message, "empreinte": e.hash, "empreinte_precedente": e.prev_hash,
        }
        for e in dossier.journal
    ]
    return json.dumps({"dossier": dossier.id, "journal": entries}, ensure_ascii=False, indent=2).encode("utf-8")


def build_request(settings: Settings, dossier: Dossier, store: ArtefactStore):
    from flows.archive.seda import ArchiveFile, ArchiveRequest

    coll = settings.config.collectivite(dossier.collectivite)
    files: list[ArchiveFile] = []
    kinds_done: set[str] = set()
    for art in dossier.artefacts:
        if art.kind in ("seda_package", "sae_ack", "sae_reply", "quality_report_json") or art.kind in kinds_done:
            continue
        if art.kind == "original" and dossier.flow == "helios" and service.artefact(dossier, "signed"):
            continue  # the signed PES supersedes the unsigned export
        if art.kind.startswith("prefecture_") and art.kind != "prefecture_ARActe":
            role = "courrier"
        else:
            role = ROLES.get(art.kind, "document")
        kinds_done.add(art.kind)
        files.append(ArchiveFile(name=art.name, data=store.get(art.sha256), role=role, mime=art.media_type
                                 if art.media_type != "application/octet-stream" else None, date=art.created_at))
    files.append(ArchiveFile(name="journal.json", data=_journal_json(dossier), role="journal",
                             mime="application/json", date=dossier.updated_at))
    start = dossier.created_at.date()
    end = (dossier.acknowledged_at or dossier.updated_at).date()
    title = dossier.objet or dossier.original_name
    keywords = [k for k in (dossier.idacte, dossier.nomfic, coll.name) if k]
    return ArchiveRequest(
        dossier_id=dossier.id, title=title[:250], flow=dossier.flow, doc_type=dossier.doc_type or "pes",
        collectivite_name=coll.name, collectivite_siren=coll.siren, profile=coll.archive_profile(dossier.doc_type),
        start_date=start, end_date=end, files=files, archival_agency=settings.config.archival_agency,
        transferring_agency=settings.config.transferring_agency, keywords=keywords,
        transfer_date=dossier.acknowledged_at or dossier.updated_at,
    )


def prepare(settings: Settings, dossier_id: str) -> tuple[str, str] | None:
    """Build and record the package (once). Returns (package name, sha256) or None."""
    from flows.archive.seda import build_package

    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.state not in ("acquitte", "depose_sae"):
            return None
        existing = service.artefact(dossier, "seda_package")
        if existing is not None:
            return existing.name, existing.sha256
        cfg = settings.config
        package = build_package(build_request(settings, dossier, store), version=cfg.seda_version,
                                digest_algorithm=cfg.digest_algorithm, fmt=cfg.package_format)
        art = service.attach(session, store, dossier, kind="seda_package", name=package.name, data=package.data,
                             media_type="application/gzip" if package.name.endswith("gz") else "application/zip")
        dossier.message_identifier = package.message_identifier
        profile = settings.config.collectivite(dossier.collectivite).archive_profile(dossier.doc_type)
        # kept to explain a refusal: the SAE names the fault, not the value it refused
        dossier.extra = {**(dossier.extra or {}), "archive": {
            "archival_agreement": profile.archival_agreement, "archival_profile": profile.archival_profile}}
        return art.name, art.sha256


def deposit_one(settings: Settings, dossier_id: str, endpoint_factory, upload_dir: str = "depot") -> bool:
    prepared = prepare(settings, dossier_id)
    if prepared is None:
        return False
    name, sha = prepared
    uploaded = upload_recorded(settings, dossier_id, "sae", endpoint_factory, upload_dir, name, sha)
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.state == "acquitte":
            dossier.deposited_at = service.now()
            note = "" if uploaded else " (déjà présent au SAE : pas de second dépôt)"
            service.transition(session, dossier, "depose_sae",
                               message=f"Paquet SEDA {settings.config.seda_version} déposé au SAE : {name} "
                                       f"(MessageIdentifier {dossier.message_identifier}){note}.",
                               details={"package": name, "message_identifier": dossier.message_identifier})
    return True


def deposit_ready(settings: Settings, endpoint_factory, upload_dir: str = "depot", *, timing: str = "immediate",
                  limit: int = 200) -> list[str]:
    """Deposit every acknowledged dossier whose collectivité deposits with this timing."""
    slugs = {c.slug for c in settings.config.collectivites if timing == "all" or c.deposit == timing}
    with session_scope(settings.database_url) as session:
        ids = session.execute(
            select(Dossier.id).where(Dossier.state == "acquitte", Dossier.collectivite.in_(slugs))
            .order_by(Dossier.acknowledged_at).limit(limit)
        ).scalars().all()
    done = []
    for i, dossier_id in enumerate(ids):
        try:
            if deposit_one(settings, dossier_id, endpoint_factory, upload_dir):
                done.append(dossier_id)
        except TransientError as exc:  # the SAE is unreachable: every dossier still to deposit waits for it
            with session_scope(settings.database_url) as session:
                for other in ids[i + 1:]:
                    service.wait(session, service.get(session, other, for_update=True), waiting_reason("sae", exc))
            raise
    return done
