"""Turn claimed files into dossiers, idempotently: a sweep can run any number of times.

A crash between claiming and recording leaves the file in the claimed area; the next sweep
records it. Every file is scanned by ClamAV (flows.antivirus) before it is stored: an infected one
is quarantined and refused beside the inbox, and while clamd gives no verdict it stays claimed. A crash between recording and moving it away is recognised by the recorded
claimed path and finished, not mistaken for a duplicate.
"""

from __future__ import annotations

import errno
import hashlib
import logging
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

log = logging.getLogger(__name__)

MAX_INBOX_BYTES = 512 * 1024 * 1024
# a claimed file that cannot be read for one of these reasons is set aside with an explanation;
# any other error leaves it for the next sweep (and never stops the other files)
_PER_FILE_ERRORS = {errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP, errno.ENXIO, errno.EINVAL,
                    errno.ENAMETOOLONG, errno.ENOTDIR, errno.EILSEQ}


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
    return folder / inbox.bounded(f"{dossier_id}__", name, reserve=0)


def safety_age(settings: Settings) -> tuple[float, bool]:
    """How quiet a file must be for the sweep to claim it, and whether the change time counts too.
    Where the watcher uses events, it claims a file at its close; the sweep then only catches what
    a stopped watcher left, so it must never take a file whose writer merely pauses."""
    if inbox.events_wanted(settings.inbox_root, settings.inbox_events):
        return max(settings.inbox_safety_age, settings.inbox_min_age), True
    return settings.inbox_min_age, False


def sweep(settings: Settings, *, claim_stable: bool = True, min_age: float | None = None) -> list[Started]:
    """Claim stable files (safety net), record every claimed file, return the dossiers to start.

    Sweeps may be started side by side (each inbox event starts one, so a drop never waits for
    another drop's run to finish): they take turns on a database lock, and the later one finds
    the files the earlier one recorded already moved away.
    """
    with session_scope(settings.database_url) as guard:
        lock(guard, "demat-ingest-sweep")
        return _sweep(settings, claim_stable=claim_stable, min_age=min_age)


def _sweep(settings: Settings, *, claim_stable: bool, min_age: float | None) -> list[Started]:
    if claim_stable:
        age, strict = safety_age(settings) if min_age is None else (min_age, False)
        inbox.claim_stable(settings.inbox_root, settings.work_dir, min_age=age, strict=strict)
    config = settings.config
    known = {c.slug for c in config.collectivites}
    store = ArtefactStore(settings.store_root)
    started: list[Started] = []
    for slug, flow, claimed in inbox.list_claimed(settings.work_dir):
        shown = inbox.agent_path(slug, flow, inbox.original_name(claimed))
        try:
            one = _record(settings, store, known, slug, flow, claimed)
        except FileNotFoundError:
            continue  # a sweep beside this one took it
        except OSError as exc:  # this file only: the others go on
            if exc.errno not in _PER_FILE_ERRORS:
                log.warning("Fichier %s laissé pour le prochain passage : %s", shown, exc.strerror)
                continue
            log.warning("Fichier %s illisible, mis de côté : %s", shown, exc.strerror)
            _set_aside_unreadable(settings, slug, flow, claimed, exc)
            continue
        if one is not None:
            started.append(one)
    started.extend(_orphans(settings, exclude={s.dossier_id for s in started}))
    return started


def _set_aside_unreadable(settings: Settings, slug: str, flow: str, claimed: Path, exc: OSError) -> None:
    name = inbox.original_name(claimed)
    try:
        inbox.reject_beside(
            settings.inbox_root, slug, flow, name, claimed,
            f"Fichier « {inbox.agent_path(slug, flow, name)} » refusé : demat ne peut pas le lire "
            f"({exc.strerror or exc}).\nCorrection : vérifiez les droits de lecture du fichier puis déposez-le à "
            "nouveau.\n",
        )
    except OSError as again:
        log.warning("Fichier %s : mise de côté impossible (%s)", inbox.agent_path(slug, flow, name), again.strerror)


def _record(settings: Settings, store: ArtefactStore, known: set[str], slug: str, flow: str,
            claimed: Path) -> Started | None:
    """One claimed file: refused beside the inbox, or recorded as a dossier (the run to start)."""
    name = inbox.original_name(claimed)
    shown = inbox.agent_path(slug, flow, name)
    if slug not in known or flow not in inbox.FLOWS:
        inbox.reject_beside(
            settings.inbox_root, slug, flow, name, claimed,
            f"Fichier « {shown} » refusé : la collectivité « {inbox.readable_name(slug)} » ou le flux "
            f"« {inbox.readable_name(flow)} » n'est pas configuré.\n"
            "Correction : déposez le fichier dans le dossier d'une collectivité configurée.\n",
        )
        return None
    size = claimed.stat().st_size
    if size == 0 or size > MAX_INBOX_BYTES:
        why = "est vide" if size == 0 else f"dépasse la taille maximale ({MAX_INBOX_BYTES // (1024 * 1024)} Mio)"
        inbox.reject_beside(
            settings.inbox_root, slug, flow, name, claimed,
            f"Fichier « {shown} » refusé : il {why}.\nCorrection : vérifiez l'export et déposez à nouveau le fichier.\n",
        )
        return None
    if not _scanned_clean(settings, slug, flow, name, claimed):
        return None  # infected (quarantined, refused) or antivirus down (waits in the claimed area)
    sha, size = _sha256_file(claimed)
    with session_scope(settings.database_url) as session:
        existing = service.by_sha(session, sha)
        if existing is not None:
            if existing.extra.get("claimed") == claimed.name:
                # we recorded it before a crash: finish the move, start it if needed
                os.replace(claimed, _done_path(settings, slug, flow, existing.id, name))
                return Started(existing.id, flow, slug) if existing.state == "recu" else None
            inbox.reject_beside(
                settings.inbox_root, slug, flow, name, claimed,
                f"Fichier « {shown} » refusé : doublon. Le même contenu (sha256 {sha[:16]}…) a déjà été reçu "
                f"le {existing.created_at:%d/%m/%Y à %H:%M} UTC, dossier {existing.id} "
                f"(état : {existing.state}).\nCorrection : aucune, le document est déjà pris en charge ; "
                "pour une version corrigée, modifiez le fichier avant de le déposer.\n",
            )
            return None
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
    return Started(dossier_id, flow, slug)


def waiting_note(settings: Settings, slug: str, flow: str, claimed: Path) -> Path:
    """Where the French reason why a claimed file waits for the antivirus is kept (the operator's view)."""
    return settings.work_dir / "attente-antivirus" / slug / flow / (claimed.name + ".txt")


def _scanned_clean(settings: Settings, slug: str, flow: str, name: str, claimed: Path) -> bool:
    """ClamAV before anything is stored: infected → quarantine and a refusal beside the inbox; no
    verdict (clamd down) → the file stays claimed, neither passed nor refused, the reason written."""
    from flows import antivirus

    shown = inbox.agent_path(slug, flow, name)
    verdict = antivirus.scan_path(claimed)
    note = waiting_note(settings, slug, flow, claimed)
    if verdict.waits:
        log.warning("Fichier %s en attente de l'antivirus : %s", shown, verdict.detail)
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(antivirus.waiting_text(shown, verdict.detail), encoding="utf-8")
        return False
    note.unlink(missing_ok=True)
    if not verdict.infected:
        return True
    root = antivirus.quarantine_root(settings.state_dir)
    kept, text = antivirus.quarantine(root, slug, flow, name, claimed, shown=shown, signature=verdict.signature)
    log.warning("Fichier %s infecté (%s) : mis en quarantaine (%s), refusé", shown, verdict.signature, kept.name)
    inbox.reject_beside(settings.inbox_root, slug, flow, name, None, text, key=kept.name.split("_", 1)[0])
    return False


def refuse_if_infected(settings: Settings, slug: str, flow: str, name: str, path: Path) -> str | None:
    """An upload (API) scanned before it enters the inbox: infected → quarantined, the French reason
    returned (and written beside the inbox); clean, off or no verdict → None (the ingestion scans
    again, and holds the file while clamd is down)."""
    from flows import antivirus

    verdict = antivirus.scan_path(path)
    if not verdict.infected:
        return None
    shown = inbox.agent_path(slug, flow, name)
    kept, text = antivirus.quarantine(antivirus.quarantine_root(settings.state_dir), slug, flow, name, path,
                                      shown=shown, signature=verdict.signature)
    log.warning("Fichier %s infecté (%s) : mis en quarantaine (%s), refusé", shown, verdict.signature, kept.name)
    return text.splitlines()[0] + " " + text.splitlines()[1]


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
