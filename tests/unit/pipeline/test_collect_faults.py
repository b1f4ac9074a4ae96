"""The collection never loses a reply: a malformed one is recorded, kept and set aside; demat's own
fault leaves the reply in place for the next pass while the others are still applied; a reply that
fails half-way leaves nothing of itself in the database."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.models import InboundMessage
from flows.dossier.store import ArtefactStore
from flows.pipeline import collect
from flows.transport.local import LocalEndpoint


@pytest.fixture
def sae(tmp_path):
    root = tmp_path / "sae"
    (root / "retour").mkdir(parents=True)
    return root


def _drop(root, name: str, data: bytes) -> None:
    (root / "retour" / name).write_bytes(data)


def test_malformed_reply_is_recorded_kept_and_set_aside(demo_settings, sae):
    data = b"<ArchiveTransferReply><pas-fini"
    _drop(sae, "reply-1.xml", data)
    result = collect.collect(demo_settings, "sae", lambda c: LocalEndpoint(sae))
    assert result.unmatched == ["reply-1.xml"]
    assert (sae / "retour" / "traites" / "reply-1.xml").exists()
    sha = hashlib.sha256(data).hexdigest()
    assert ArtefactStore(demo_settings.store_root).get(sha) == data
    with session_scope(demo_settings.database_url) as s:
        row = s.execute(select(InboundMessage).where(InboundMessage.sha256 == sha)).scalar_one()
        assert row.outcome.startswith("illisible")


def test_demat_fault_leaves_the_reply_in_place_and_applies_the_others(demo_settings, sae, monkeypatch):
    with session_scope(demo_settings.database_url) as s:
        did = service.create(s, collectivite="saint-sever", flow="helios", original_name="PES.xml",
                             sha256="c" * 64, size=1).id
    calls = []

    def handler(session, store, name, data):
        calls.append(name)
        dossier = service.get(session, did, for_update=True)
        service.note(session, dossier, event="test", actor="test", message=f"lu {name}")
        if name == "a-bug.xml":
            raise ImportError("cannot import name 'x'")  # a bug of demat, not of the reply
        if name == "b-bad.xml":
            raise ValueError("contenu incohérent")  # the reply's fault, after a write
        return [did]

    monkeypatch.setattr(collect, "_handle_sae", handler)
    for name in ("a-bug.xml", "b-bad.xml", "c-good.xml"):
        _drop(sae, name, name.encode())
    with pytest.raises(RuntimeError, match="a-bug.xml"):
        collect.collect(demo_settings, "sae", lambda c: LocalEndpoint(sae))
    assert sorted(calls) == ["a-bug.xml", "b-bad.xml", "c-good.xml"]  # the bug did not stop the others
    assert (sae / "retour" / "a-bug.xml").exists()  # left for the next pass, not recorded
    assert sorted(p.name for p in (sae / "retour" / "traites").iterdir()) == ["b-bad.xml", "c-good.xml"]
    with session_scope(demo_settings.database_url) as s:
        notes = [e.message for e in service.get(s, did).journal if e.event == "test"]
        assert notes == ["lu c-good.xml"]  # the two failed replies left nothing of themselves
        names = set(s.execute(select(InboundMessage.name)).scalars())
        assert names == {"b-bad.xml", "c-good.xml"}
    calls.clear()
    monkeypatch.setattr(collect, "_handle_sae", lambda session, store, name, data: [did])  # the bug is fixed
    assert collect.collect(demo_settings, "sae", lambda c: LocalEndpoint(sae)).processed == 1
    assert not (sae / "retour" / "a-bug.xml").exists()
