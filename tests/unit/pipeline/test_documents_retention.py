"""Retention of documents on PostgreSQL: only dossiers archived (SAE confirmed) long enough ago lose their
files; nothing in progress, refused or not yet archived is ever touched; shared bytes stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import nightly
from flows.pipeline.documents_retention import PURGED, purge_documents
from flows.settings import REPO, Settings

NOW = datetime(2027, 6, 1, 3, 0, tzinfo=UTC)
PATH = ("valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae")


@pytest.fixture
def settings(tmp_path, demat_db) -> Settings:
    config = yaml.safe_load((REPO / "flows" / "config" / "demo.yaml").read_text())
    config.setdefault("retention", {})["documents_days"] = 90
    for c in config["collectivites"]:
        if c["slug"] == "cc-chalosse-tursan":
            c["documents_retention_days"] = {"actes": 0}  # this one keeps its actes
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    state = tmp_path / "state"
    return Settings(state_dir=state, config_path=path, database_url=demat_db, store_root=str(state / "store"),
                    inbox_root=state / "inbox", pki_dir=state / "pki", reference_dir=tmp_path)


def make(settings, tag: str, state: str, *, archived_days: float | None = None, archive_id: str | None = "SAE-1",
         coll: str = "saint-sever", flow: str = "actes", shared: bytes | None = None) -> str:
    store = ArtefactStore(settings.store_root)
    original = f"original {tag}".encode()
    sha = store.put(original)
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=coll, flow=flow, original_name=f"{tag}.zip", sha256=sha,
                           size=len(original), doc_type="")
        for target in (*PATH, state):
            if d.state == state:
                break
            if target == "erreur" or service.transition(s, d, target, message="test") is False:
                break
        if d.state != state:
            service.transition(s, d, state, message="test")
        service.attach(s, store, d, kind="transmission", name=f"{tag}.tar.gz", data=f"tx {tag}".encode())
        if shared is not None:
            service.attach(s, store, d, kind="seda_package", name=f"{tag}-sip.tar.gz", data=shared)
        if archived_days is not None:
            d.archived_at = NOW - timedelta(days=archived_days)
            d.archive_id = archive_id
        return d.id


def files_of(settings, dossier_id: str) -> dict[str, bool]:
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        out = {a.name: store.exists(a.sha256) for a in d.artefacts}
        out[d.original_name] = store.exists(d.sha256)
        return out


def test_only_archived_and_old_enough_dossiers_lose_their_documents(settings):
    shared = b"the same SEDA bytes in two dossiers"
    due = make(settings, "due", "archive", archived_days=120, shared=shared)
    recent = make(settings, "recent", "archive", archived_days=30, shared=shared)
    waiting_sae = make(settings, "attente-sae", "depose_sae", archived_days=400)
    in_progress = make(settings, "en-cours", "transmis")
    refused = make(settings, "refuse", "refuse_sae", archived_days=400)
    no_id = make(settings, "sans-id", "archive", archived_days=400, archive_id=None)
    kept_by_config = make(settings, "cc", "archive", archived_days=400, coll="cc-chalosse-tursan")
    pes = make(settings, "pes", "archive", archived_days=91, flow="helios")
    untouched = [recent, waiting_sae, in_progress, refused, no_id, kept_by_config]

    dry = nightly.documents_retention(settings, dry_run=True, now=NOW)
    assert dry["simulation"] and dry["dossiers"] == 2 and dry["fichiers"] == 4  # due: 2 of 3 (one shared), pes: 2
    report = json.loads(open(dry["rapport"], encoding="utf-8").read())
    assert {d["dossier"] for d in report["dossiers"]} == {due, pes}
    assert all(all(files_of(settings, i).values()) for i in [due, pes, *untouched])  # a dry run deletes nothing

    done = nightly.documents_retention(settings, now=NOW)
    assert done["fichiers"] == 4 and not done["simulation"]
    gone = files_of(settings, due)
    assert gone == {"due.zip": False, "due.tar.gz": False, "due-sip.tar.gz": True}  # shared with `recent`
    assert not any(files_of(settings, pes).values())
    for i in untouched:
        assert all(files_of(settings, i).values()), i
    with session_scope(settings.database_url) as s:
        d = service.get(s, due)
        assert d.state == "archive" and d.extra[PURGED] == NOW.date().isoformat()  # the record stays
        entry = [e for e in d.journal if e.event == PURGED]
        assert len(entry) == 1 and "Documents purgés" in entry[0].message and "SAE-1" in entry[0].message
        assert "due-sip.tar.gz" in entry[0].message  # kept because shared, and said
        assert len(d.artefacts) == 2  # artefact rows (name, sha256, size) kept
        for i in untouched:
            assert not [e for e in service.get(s, i).journal if e.event == PURGED]
    again = purge_documents(settings, now=NOW)
    assert again.dossiers == [] and again.files_deleted == 0


def test_never_before_the_period_nor_without_the_sae(settings):
    edge = make(settings, "limite", "archive", archived_days=89.9)
    assert purge_documents(settings, now=NOW).dossiers == []
    assert all(files_of(settings, edge).values())
    assert [d["dossier"] for d in purge_documents(settings, now=NOW + timedelta(hours=3)).dossiers] == [edge]
