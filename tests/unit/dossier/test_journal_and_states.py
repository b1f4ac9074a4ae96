"""The dossier state machine, the hash-chained journal and the content-addressed store, on real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from flows.dossier import service, states
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.dossier.store import ArtefactStore


def _new(session, sha="a" * 64, flow="helios"):
    return service.create(session, collectivite="saint-sever", flow=flow, original_name="PES.xml", sha256=sha, size=10)


def test_every_declared_transition_targets_a_known_state():
    for flow, table in states.FLOWS.items():
        for source, targets in table.items():
            assert source in states.STATES, (flow, source)
            for target in targets:
                assert target in states.STATES, (flow, target)
    assert states.label("transmis", "actes") == "Transmis à la préfecture"
    assert states.is_final("archive") and not states.is_final("transmis")


def test_transitions_are_journaled_and_forbidden_ones_refused(demat_db):
    with session_scope(demat_db) as s:
        d = _new(s)
        assert service.transition(s, d, "valide", message="ok")
        assert not service.transition(s, d, "valide", message="again")  # idempotent
        with pytest.raises(states.TransitionRefused, match="Transition interdite"):
            service.transition(s, d, "archive", message="jump")
        service.transition(s, d, "au_parapheur", message="parapheur")
        service.transition(s, d, "rejete_parapheur", message="Rejeté : montant erroné", actor="maire")
        assert d.reason == "Rejeté : montant erroné"
        events = [(e.state_from, e.state_to) for e in d.journal]
    assert events == [(None, "recu"), ("recu", "valide"), ("valide", "au_parapheur"),
                      ("au_parapheur", "rejete_parapheur")]


def test_journal_chain_detects_a_modified_row(demat_db):
    with session_scope(demat_db) as s:
        d = _new(s)
        service.transition(s, d, "valide", message="ok")
        service.note(s, d, event="info", message="une note")
    with session_scope(demat_db) as s:
        check = verify_chain(s)
        assert check.ok and check.entries == 3
        s.execute(text("UPDATE journal SET message = 'falsifié' WHERE id = (SELECT min(id) + 1 FROM journal)"))
    with session_scope(demat_db) as s:
        check = verify_chain(s)
        assert not check.ok
        assert check.reason == "le contenu de l'entrée a été modifié"


def test_same_content_is_one_dossier(demat_db):
    with session_scope(demat_db) as s:
        _new(s, sha="b" * 64)
    with pytest.raises(Exception, match="unique|duplicate"), session_scope(demat_db) as s:
        _new(s, sha="b" * 64)


def test_store_is_content_addressed_and_idempotent(tmp_path):
    store = ArtefactStore(tmp_path / "store")
    sha = store.put(b"bonjour")
    assert store.put(b"bonjour") == sha
    assert store.get(sha) == b"bonjour"
    assert store.local_path(sha).read_bytes() == b"bonjour"
    assert len(list((tmp_path / "store").rglob("*"))) == 3  # two fan-out folders and one file
