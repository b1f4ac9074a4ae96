"""The nightly batch: the day's tiers report over every PES received, the stuck-dossier report and the
retention of documents (purged from the store N days after the SAE confirmed the archive)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select

from flows.dossier.db import session_scope
from flows.dossier.models import Dossier
from flows.dossier.store import ArtefactStore
from flows.pipeline.watch import find_stuck
from flows.settings import Settings


def reports_dir(settings: Settings) -> Path:
    folder = settings.state_dir / "rapports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def tiers_report(settings: Settings, day: date) -> dict:
    """Run the tiers gate over every PES received that day; one JSON summary, one HTML per faulty file."""
    from flows.quality.gate import run_tiers_gate

    start = datetime.combine(day, time.min, tzinfo=UTC)
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Dossier.id, Dossier.sha256, Dossier.original_name, Dossier.collectivite).where(
                Dossier.flow == "helios", Dossier.created_at >= start, Dossier.created_at < start + timedelta(days=1))
        ).all()
    out = {"jour": day.isoformat(), "fichiers": []}
    folder = reports_dir(settings)
    for dossier_id, sha, name, coll in rows:
        path = store.local_path(sha)
        if path is None:
            tmp = settings.work_dir / "tmp" / f"{sha}.bin"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(store.get(sha))
            path = tmp
        result = run_tiers_gate(path)
        entry = {"dossier": dossier_id, "collectivite": coll, "fichier": name, "bloquant": not result.ok,
                 "anomalies": len(result.findings)}
        if result.findings:
            html = folder / f"{day.isoformat()}-tiers-{dossier_id}.html"
            html.write_text(result.to_html(), encoding="utf-8")
            entry["rapport"] = str(html)
        out["fichiers"].append(entry)
    (folder / f"{day.isoformat()}-tiers.json").write_text(json.dumps(out, ensure_ascii=False, indent=2), "utf-8")
    return out


def stuck_report(settings: Settings, now: datetime | None = None) -> list[dict]:
    now = now or datetime.now(UTC)
    stuck = [{"dossier": s.dossier_id, "collectivite": s.collectivite, "etat": s.state, "heures": round(s.hours, 1),
              "message": s.message()} for s in find_stuck(settings, now=now)]
    path = reports_dir(settings) / f"{now.date().isoformat()}-dossiers-bloques.json"
    path.write_text(json.dumps(stuck, ensure_ascii=False, indent=2), "utf-8")
    return stuck


def documents_retention(settings: Settings, *, dry_run: bool = False, now: datetime | None = None) -> dict:
    """Purge the documents of dossiers archived long enough ago (flows.pipeline.documents_retention)
    and write the report (rapports/<jour>-purge-documents[-simulation].json)."""
    from flows.pipeline.documents_retention import purge_documents

    now = now or datetime.now(UTC)
    report = purge_documents(settings, dry_run=dry_run, now=now)
    suffix = "-simulation" if dry_run else ""
    path = reports_dir(settings) / f"{now.date().isoformat()}-purge-documents{suffix}.json"
    path.write_text(report.to_json(), "utf-8")
    return {"dossiers": len(report.dossiers), "fichiers": report.files_deleted, "octets": report.bytes_deleted,
            "rapport": str(path), "simulation": dry_run}
