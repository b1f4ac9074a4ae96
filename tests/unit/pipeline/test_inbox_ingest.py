"""Inbox claiming and the idempotent sweep, on a real filesystem and a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.models import Dossier
from flows.pipeline import inbox
from flows.pipeline.ingest import sweep
from flows.settings import REPO, Settings


@pytest.fixture
def settings(tmp_path, demat_db) -> Settings:
    state = tmp_path / "state"
    s = Settings(
        state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
        store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
        reference_dir=tmp_path,
    )
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    return s


def _drop(settings: Settings, name: str, data: bytes, coll="saint-sever", flow="helios", age=10.0) -> Path:
    p = settings.inbox_root / coll / flow / name
    p.write_bytes(data)
    old = time.time() - age
    os.utime(p, (old, old))
    return p


def test_files_being_written_are_not_taken(settings):
    p = _drop(settings, "PES1.xml", b"<x/>", age=0)
    item = next(inbox.scan(settings.inbox_root))
    assert not inbox.is_stable(item, min_age=2.0)
    assert inbox.is_stable(item, min_age=2.0, now=time.time() + 5)
    assert not inbox.is_stable(item, min_age=2.0, previous=(1, 0.0), now=time.time() + 5)  # changed since last poll
    (settings.inbox_root / "saint-sever" / "helios" / ".PES2.xml.part").write_bytes(b"partial")
    assert [i.path.name for i in inbox.scan(settings.inbox_root)] == [p.name]
    p.with_name(p.name + ".ok").write_bytes(b"")  # a marker file says it is complete
    assert inbox.is_stable(item, min_age=3600)


def test_sweep_records_once_and_refuses_duplicates(settings):
    _drop(settings, "PES1.xml", b"<PES_Aller>1</PES_Aller>")
    started = sweep(settings)
    assert len(started) == 1 and started[0].dag_id == "demat_pes"
    assert started[0].run_id == f"dossier__{started[0].dossier_id}"
    assert sweep(settings) == []  # nothing new: idempotent
    _drop(settings, "PES1-copie.xml", b"<PES_Aller>1</PES_Aller>")
    assert sweep(settings) == []
    rejected = sorted(p.name for p in (settings.inbox_root / "saint-sever" / "helios" / "rejetes").iterdir())
    assert len(rejected) == 2 and rejected[0].endswith("PES1-copie.xml") and rejected[1].endswith(".erreur.txt")
    explanation = (settings.inbox_root / "saint-sever" / "helios" / "rejetes" / rejected[1]).read_text()
    assert "doublon" in explanation and started[0].dossier_id in explanation
    with session_scope(settings.database_url) as s:
        d = service.get(s, started[0].dossier_id)
        assert d.state == "recu" and [a.kind for a in d.artefacts] == ["original"]


def test_crash_between_claim_and_record_is_recovered(settings):
    p = _drop(settings, "acte.zip", b"PK fake zip", flow="actes")
    claimed = inbox.claim(next(inbox.scan(settings.inbox_root)), settings.work_dir)  # then "crash"
    assert claimed.exists() and not p.exists()
    started = sweep(settings, claim_stable=False)
    assert [s.flow for s in started] == ["actes"] and not claimed.exists()


def test_crash_after_record_before_move_is_not_a_duplicate(settings):
    _drop(settings, "PES9.xml", b"<PES_Aller>9</PES_Aller>")
    first = sweep(settings)
    done = next((settings.work_dir / "done").rglob("*PES9.xml"))
    # put the file back into the claimed area, as if the move had not happened before a crash
    with session_scope(settings.database_url) as s:
        claimed_name = service.get(s, first[0].dossier_id).extra["claimed"]
    target = inbox.claimed_dir(settings.work_dir, "saint-sever", "helios") / claimed_name
    shutil.move(done, target)
    again = sweep(settings, claim_stable=False)
    assert [s.dossier_id for s in again] == [first[0].dossier_id]
    assert not list((settings.inbox_root / "saint-sever" / "helios" / "rejetes").iterdir())


def test_empty_file_and_unknown_collectivite_are_refused_with_explanation(settings):
    _drop(settings, "vide.xml", b"")
    (settings.inbox_root / "inconnue" / "helios").mkdir(parents=True)
    p = settings.inbox_root / "inconnue" / "helios" / "x.xml"
    p.write_bytes(b"<x/>")
    os.utime(p, (time.time() - 10, time.time() - 10))
    assert sweep(settings) == []
    texts = [f.read_text() for f in settings.inbox_root.rglob("*.erreur.txt")]
    assert any("est vide" in t for t in texts)
    assert any("n'est pas configuré" in t for t in texts)
    assert len(list(settings.inbox_root.rglob("rejetes/*vide.xml"))) == 1  # original kept


def test_sweeps_side_by_side_record_each_file_once_and_start_each_dossier_once(settings):
    """The ingest DAG lets runs overlap (a drop never waits for another drop's run): no race."""
    from concurrent.futures import ThreadPoolExecutor

    for i in range(30):
        _drop(settings, f"PES{i:02d}.xml", f"<PES_Aller>{i}</PES_Aller>".encode())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sweep(settings, min_age=1.0), range(4)))
    started = [s.dossier_id for r in results for s in r]
    assert len(started) == 30 and len(set(started)) == 30
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Dossier)) == 30
    assert not (settings.inbox_root / "saint-sever" / "helios" / "rejetes").exists() or not any(
        (settings.inbox_root / "saint-sever" / "helios" / "rejetes").iterdir())
