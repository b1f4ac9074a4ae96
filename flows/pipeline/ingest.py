"""Turn claimed files into dossiers, idempotently: a sweep can run any number of times.

A crash between claiming and recording leaves the file in the claimed area; the next sweep
records it. A crash between recording and moving it away is recognised by the recorded
claimed path and finished, not mistaken for a duplicate.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from flows.dossier import service
from flows.dossier.db import lock, session_scope
from flows.dossier.models import Artefact, Dossier
from flows.dossier.store import ArtefactStore
from flows.pipeline import inbox
from flows.settings import Settings

MAX_INBOX_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Started:
    dossier_id: str
    flow: str
    collectivite: str

    @property
    def run_id(self) -> str:
        return run_id_for(self.dossier_id)

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.flow)


def run_id_for(dossier_id: str) -> str:
    return f"dossier__{dossier_id}"


def dag_id_for(flow: str) -> str:
    return {"actes": "demat_acte", "helios": "demat_pes"}[flow]


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _done_path(settings: Settings, collectivite: str, flow: str, dossier_id: str, name: str) -> Path:
    folder = settings.work_dir / "done" / collectivite / flow
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{dossier_id}__{name}"


def sweep(settings: Settings, *, claim_stable: bool = True, min_age: float = 2.0) -> list[Started]:
    """Claim stable files (safety net), record every claimed file, return the dossiers to start.

    Sweeps may be started side by side (each inbox event starts one, so a drop never waits for
    another drop's run to finish): they take turns on a database lock, and the later one finds
    the files the earlier one recorded already moved away.
    """
    with session_scope(settings.database_url) as guard:
        lock(guard, "demat-ingest-sweep")
        return _sweep(settings, claim_stable=claim_stable, min_age=min_age)


def _sweep(settings: Settings, *, claim_stable: bool, min_age: float) -> list[Started]:
    if claim_stable:
        inbox.claim_stable(settings.inbox_root, settings.work_dir, min_age=min_age)
    config = settings.config
    known = {c.slug for c in config.collectivites}
    store = ArtefactStore(settings.store_root)
    started: list[Started] = []
    for slug, flow, claimed in inbox.list_claimed(settings.work_dir):
        name = inbox.original_name(claimed)
        if slug not in known or flow not in inbox.FLOWS:
            inbox.reject_beside(
                settings.inbox_root, slug, flow, name, claimed,
                f"Fichier « {name} » refusé : la collectivité « {slug} » ou le flux « {flow} » n'est pas configuré.\n"
                "Correction : déposez le fichier dans le dossier d'une collectivité configurée.\n",
            )
            continue
        size = claimed.stat().st_size
        if size == 0 or size > MAX_INBOX_BYTES:
            why = "est vide" if size == 0 else f"dépasse la taille maximale ({MAX_INBOX_BYTES // (1024 * 1024)} Mio)"
            inbox.reject_beside(
                settings.inbox_root, slug, flow, name, claimed,
                f"Fichier « {name} » refusé : il {why}.\nCorrection : vérifiez l'export et déposez à nouveau le fichier.\n",
            )
            continue
        sha, size = _sha256_file(claimed)
        with session_scope(settings.database_url) as session:
            existing = service.by_sha(session, sha)
            if existing is not None:
                if existing.extra.get("claimed") == claimed.name:
                    # we recorded it before a crash: finish the move, start it if needed
                    os.replace(claimed, _done_path(settings, slug, flow, existing.id, name))
                    if existing.state == "recu":
                        started.append(Started(existing.id, flow, slug))
                    continue
                inbox.reject_beside(
                    settings.inbox_root, slug, flow, name, claimed,
                    f"Fichier « {name} » refusé : doublon. Le même contenu (sha256 {sha[:16]}…) a déjà été reçu "
                    f"le {existing.created_at:%d/%m/%Y à %H:%M} UTC, dossier {existing.id} "
                    f"(état : {existing.state}).\nCorrection : aucune, le document est déjà pris en charge ; "
                    "pour une version corrigée, modifiez le fichier avant de le déposer.\n",
                )
                continue
            store.put_file(claimed)
            dossier = service.create(
                session, collectivite=slug, flow=flow, original_name=name, sha256=sha, size=size,
                doc_type="pes" if flow == "helios" else "", extra={"claimed": claimed.name},
            )
            dossier.run_id = run_id_for(dossier.id)
            session.add(Artefact(dossier_id=dossier.id, kind="original", name=name, sha256=sha, size=size,
                                 media_type=_media_type(name), created_at=service.now()))
            from flows.pipeline.actions import link_resubmission

            link_resubmission(session, dossier)  # a corrected file announced from the UI or the API
            dossier_id = dossier.id
        os.replace(claimed, _done_path(settings, slug, flow, dossier_id, name))
        started.append(Started(dossier_id, flow, slug))
    started.extend(_orphans(settings, exclude={s.dossier_id for s in started}))
    return started


def _orphans(settings: Settings, *, exclude: set[str], older_than: timedelta = timedelta(minutes=2)) -> list[Started]:
    """Dossiers recorded but whose run may never have been created (crash after recording)."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Dossier.id, Dossier.flow, Dossier.collectivite).where(
                Dossier.state == "recu", Dossier.created_at < service.now() - older_than
            )
        ).all()
    return [Started(i, f, c) for i, f, c in rows if i not in exclude]


def _media_type(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".xml"):
        return "application/xml"
    if lower.endswith(".zip"):
        return "application/zip"
    if lower.endswith(".pdf"):
        return "application/pdf"
    return "application/octet-stream"
