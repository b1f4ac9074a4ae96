"""Retention of documents: a dossier's files leave demat's store N days after the SAE confirmed the archive.

Only a dossier in the final state `archive` (the SAE's ArchiveTransferReply accepted it, so
`archived_at` and `archive_id` are recorded) is ever considered, and only once `archived_at` is
older than its collectivité's and flux's period (Collectivite.documents_retention_days, else
PlatformConfig.retention.documents_days; 0 keeps them). Anything in progress, refused, or waiting
for the SAE is never touched. The dossier row, its journal and its artefact rows (name, sha256,
size: what the SAE holds) are kept; the journal says "documents purgés" with the list.

A stored file is deleted only if nothing else still needs it: the store is content-addressed, so
the same bytes may belong to another dossier not purged, to a published acte (the public page
serves it) or to a PES_Retour / PES_ACQUIT the collectivité lists.

`purge_documents(settings, dry_run=True)` writes the same report without deleting anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from flows.dossier import service
from flows.dossier.db import lock, session_scope
from flows.dossier.models import Artefact, Dossier
from flows.dossier.store import ArtefactStore
from flows.settings import Settings

log = logging.getLogger(__name__)
PURGED = "documents_purges"


@dataclass
class PurgeReport:
    dry_run: bool
    dossiers: list[dict] = field(default_factory=list)
    files_deleted: int = 0
    bytes_deleted: int = 0
    kept_shared: int = 0

    def to_json(self) -> str:
        return json.dumps({"simulation": self.dry_run, "dossiers": self.dossiers, "fichiers_supprimes":
                           self.files_deleted, "octets_supprimes": self.bytes_deleted,
                           "fichiers_gardes_car_partages": self.kept_shared}, ensure_ascii=False, indent=2)


def period_days(config, collectivite: str, flow: str) -> int:
    try:
        coll = config.collectivite(collectivite)
    except KeyError:
        coll = None
    days = (coll.documents_retention_days.get(flow) if coll is not None else None)
    return config.retention.documents_days if days is None else days


def due(session, config, now: datetime) -> list[Dossier]:
    """Archived dossiers whose period has passed and whose documents are still here."""
    rows = session.execute(select(Dossier).where(
        Dossier.state == "archive", Dossier.archived_at.is_not(None), Dossier.archive_id.is_not(None))
        .order_by(Dossier.archived_at)).scalars().all()
    out = []
    for d in rows:
        if (d.extra or {}).get(PURGED):
            continue
        days = period_days(config, d.collectivite, d.flow)
        if days > 0 and d.archived_at <= now - timedelta(days=days):
            out.append(d)
    return out


def _needed_elsewhere(session, sha: str, purging: set[str]) -> bool:
    owners = set(session.execute(select(Artefact.dossier_id).where(Artefact.sha256 == sha)).scalars())
    owners |= set(session.execute(select(Dossier.id).where(Dossier.sha256 == sha)).scalars())
    if owners - purging:
        return True
    from flows.pipeline import helios_returns, publication

    publication.ensure_schema(session)
    helios_returns.ensure_schema(session)
    if session.execute(select(publication.Publication.dossier_id)
                       .where(publication.Publication.stamped_sha256 == sha)).first():
        return True
    return bool(session.execute(select(helios_returns.HeliosReturn.id)
                                .where(helios_returns.HeliosReturn.sha256 == sha)).first())


def purge_documents(settings: Settings, *, dry_run: bool = False, now: datetime | None = None) -> PurgeReport:
    """One pass (nightly): purge what is due, or with `dry_run` only say what would be purged."""
    now = now or datetime.now(UTC)
    store = ArtefactStore(settings.store_root)
    report = PurgeReport(dry_run=dry_run)
    with session_scope(settings.database_url) as session:
        lock(session, "demat-documents-retention")
        candidates = due(session, settings.config, now)
        purging = {d.id for d in candidates}
        for d in candidates:
            shas = {a.sha256: a for a in d.artefacts}
            shas.setdefault(d.sha256, None)
            deleted, kept, size = [], [], 0
            for sha, art in shas.items():
                name = art.name if art is not None else d.original_name
                if _needed_elsewhere(session, sha, purging):
                    kept.append(name)
                    continue
                if not store.exists(sha):
                    continue
                size += store.fs.size(store._path(sha))
                deleted.append(name)
                if not dry_run:
                    store.fs.rm(store._path(sha))
            report.files_deleted += len(deleted)
            report.bytes_deleted += size
            report.kept_shared += len(kept)
            report.dossiers.append({"dossier": d.id, "collectivite": d.collectivite, "flux": d.flow,
                                    "archive_le": d.archived_at.isoformat(), "archive_sae": d.archive_id,
                                    "supprimes": deleted, "gardes_car_partages": kept, "octets": size})
            if dry_run:
                continue
            days = period_days(settings.config, d.collectivite, d.flow)
            d.extra = {**(d.extra or {}), PURGED: now.date().isoformat()}
            service.note(session, d, event=PURGED, actor="demat",
                         message=f"Documents purgés du stockage de demat ({len(deleted)} fichier(s), {size} octets), "
                                 f"{days} jours après l'archivage confirmé par le SAE le {d.archived_at:%d/%m/%Y} "
                                 f"(archive {d.archive_id}) : le SAE les conserve. Le dossier et son historique "
                                 "restent consultables." + (f" Gardés car partagés : {', '.join(kept)}." if kept else ""),
                         details={"supprimes": deleted, "gardes": kept, "octets": size, "archive_id": d.archive_id})
    return report

