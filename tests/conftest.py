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
