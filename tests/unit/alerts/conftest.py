"""Fixtures of the alert tests: a real demat database, the demo configuration (adjustable), dossiers."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest
import yaml

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.settings import REPO, Settings

DEMO = REPO / "flows" / "config" / "demo.yaml"
_shas = itertools.count(1)


@pytest.fixture
def make_settings(tmp_path, demat_db) -> Callable[..., Settings]:
    """make_settings(edit=None): Settings on the test database with the demo config, edited by `edit(dict)`."""

    def _make(edit: Callable[[dict], None] | None = None, name: str = "config.yaml") -> Settings:
        data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
        if edit:
            edit(data)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return Settings(state_dir=tmp_path, config_path=path, database_url=demat_db, store_root=str(tmp_path / "store"),
                        inbox_root=tmp_path / "inbox", pki_dir=tmp_path / "pki", reference_dir=tmp_path,
                        public_url="https://demat.example.fr/")

    return _make


def new_dossier(url: str, path: tuple[str, ...], *, coll: str = "saint-sever", flow: str = "helios",
                name: str = "pes.xml", message: str = "fait") -> str:
    """A dossier moved along `path` (states), the last transition carrying `message`."""
    with session_scope(url) as s:
        d = service.create(s, collectivite=coll, flow=flow, original_name=name, sha256=hashlib.sha256(str(next(_shas)).encode()).hexdigest(), size=1)
        for i, target in enumerate(path):
            service.transition(s, d, target, message=message if i == len(path) - 1 else target)
        return d.id
