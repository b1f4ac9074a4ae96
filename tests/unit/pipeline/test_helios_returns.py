"""The bordereau index (a table, filled at validation, older dossiers indexed lazily) and the list of
PES_Retour / PES_ACQUIT per collectivité with a "lu" mark per user (real PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import collect
from flows.pipeline import helios_returns as H
from tests.unit.pipeline.test_pes_retour import _retour, _transmitted_pes


def test_validation_fills_the_index_and_matching_reads_it(demo_settings):
    settings = demo_settings
    first = _transmitted_pes(settings, "PES_IDX_A", seed=1)
    siren = settings.config.collectivite("saint-sever").siren
    with session_scope(settings.database_url) as s:
        keys = service.get(s, first).extra["bordereaux"]
        indexed = set(s.execute(select(H.BordereauIndex.bordereau).where(H.BordereauIndex.dossier_id == first)).scalars())
        assert indexed == set(keys) and len(keys) == 2
    exer, idbord = keys[0].split(":")
    siret = settings.config.collectivite("saint-sever").siret
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        assert collect._handle_dgfip(s, store, "RET_1.xml", _retour(siret, [(exer, idbord)])) == [first]
    with session_scope(settings.database_url) as s:  # the index answers, not the dossiers' JSON
        d = service.get(s, first)
        d.extra = {**d.extra, "bordereaux": ["2099:1"]}
    with session_scope(settings.database_url) as s:
        assert H.dossiers_for(s, siren, {"2099:1"}) == []
        assert [x.id for x, _ in H.dossiers_for(s, siren, {keys[1]})] == [first]


def test_dossiers_from_before_the_index_are_indexed_once_lazily(demo_settings):
    settings = demo_settings
    old = _transmitted_pes(settings, "PES_IDX_OLD", seed=3)
    with session_scope(settings.database_url) as s:  # as if validated before the index existed
        s.execute(delete(H.BordereauIndex))
        keys = service.get(s, old).extra["bordereaux"]
    siret = settings.config.collectivite("saint-sever").siret
    exer, idbord = keys[1].split(":")
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        assert collect._handle_dgfip(s, store, "RET_OLD.xml", _retour(siret, [(exer, idbord)])) == [old]
        assert s.get(H.IndexedSiren, siret[:9]) is not None
        assert s.scalar(select(func.count()).select_from(H.BordereauIndex)) == 2


def test_every_return_is_listed_matched_or_not_with_a_read_mark_per_user(demo_settings):
    settings = demo_settings
    first = _transmitted_pes(settings, "PES_IDX_L", seed=4)
    siret = settings.config.collectivite("saint-sever").siret
    siren = siret[:9]
    with session_scope(settings.database_url) as s:
        exer, idbord = service.get(s, first).extra["bordereaux"][0].split(":")
    store = ArtefactStore(settings.store_root)
    matched_data = _retour(siret, [(exer, idbord)], nomfic="RET_MATCH")
    orphan_data = _retour(siret, [("1999", "99999")], nomfic="RET_ORPHELIN")
    with session_scope(settings.database_url) as s:
        collect._handle_dgfip(s, store, "RET_MATCH.xml", matched_data)
        assert collect._handle_dgfip(s, store, "RET_ORPHELIN.xml", orphan_data) == []
        collect._handle_dgfip(s, store, "RET_ORPHELIN.xml", orphan_data)  # the same file twice: listed once
    with session_scope(settings.database_url) as s:
        rows = H.list_returns(s, siren, "agent1")
        assert {r["nom"]: r["rapproche"] for r in rows} == {"RET_MATCH.xml": True, "RET_ORPHELIN.xml": False}
        orphan = next(r for r in rows if not r["rapproche"])
        assert not orphan["lu"]
        got = s.get(H.HeliosReturn, orphan["id"])
        assert store.get(got.sha256) == orphan_data  # downloadable although it matched no dossier
        assert H.mark_read(s, orphan["id"], "agent1") and not H.mark_read(s, orphan["id"], "agent1")
    with session_scope(settings.database_url) as s:
        assert next(r for r in H.list_returns(s, siren, "agent1") if r["id"] == orphan["id"])["lu"]
        assert not next(r for r in H.list_returns(s, siren, "agent2") if r["id"] == orphan["id"])["lu"]
        assert H.list_returns(s, "200030617", "agent1") == []  # another collectivité sees nothing
