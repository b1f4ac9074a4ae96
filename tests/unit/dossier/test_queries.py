"""Search, filters, pagination, isolation and dashboard figures on real PostgreSQL, 100,000 dossiers."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from flows.config import load_config
from flows.dossier import queries, service
from flows.dossier.db import session_scope
from flows.settings import REPO

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
COLLS = ("saint-sever", "cc-chalosse-tursan", "aire-sur-adour", "mugron")
STATES = ("recu", "valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive",
          "refuse_validation", "rejete_parapheur")


def _rows(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        coll = COLLS[i % len(COLLS)]
        flow = "actes" if i % 3 else "helios"
        created = NOW - timedelta(minutes=7 * i)  # ~ 486 days back for 100,000
        state = STATES[rnd.randrange(len(STATES))]
        ack = created + timedelta(hours=1 + (i % 10)) if state in ("acquitte", "depose_sae", "archive") else None
        rows.append({
            "id": f"{coll}-{flow}-{created:%Y%m%d}-{i:010d}", "collectivite": coll, "flow": flow,
            "doc_type": "pes" if flow == "helios" else "deliberation", "state": state, "version": 1,
            "original_name": f"fichier-{i}.{'xml' if flow == 'helios' else 'zip'}", "sha256": f"{i:064x}",
            "size": 1000 + i, "siren": "214002933",
            "idacte": f"040-214002933-{created:%Y%m%d}-N{i:06d}-DE" if flow == "actes" else None,
            "nomfic": f"PES_{i:06d}" if flow == "helios" else None,
            "objet": ("Subvention au club de rugby" if i % 250 == 8 else f"Objet ordinaire {i}"),
            "created_at": created, "updated_at": created + timedelta(hours=2), "acknowledged_at": ack,
            "transmitted_at": created + timedelta(minutes=30) if state == "transmis" else None,
            "extra": {},
        })
    return rows


def _copy(url: str, rows: list[dict]) -> None:
    """PostgreSQL COPY: the bulk insert a migration or an import would use (seconds for 100,000 rows)."""
    import csv
    import io
    import json

    from flows.dossier.db import engine

    cols = list(rows[0])
    buf = io.StringIO()
    writer = csv.writer(buf)
    for r in rows:
        writer.writerow([json.dumps(r[c]) if c == "extra" else ("" if r[c] is None else
                         (r[c].isoformat() if isinstance(r[c], datetime) else r[c])) for c in cols])
    buf.seek(0)
    raw = engine(url).raw_connection()
    try:
        with raw.cursor() as cur:
            cur.copy_expert(f"COPY dossier ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)", buf)
        raw.commit()
    finally:
        raw.close()


@pytest.fixture(scope="module")
def big_db(pg_server):
    """Read-only for the tests that use it, so built once per module."""
    from flows.dossier.db import create_schema

    pg_server.ensure_database("t_queries_100k")
    url = pg_server.url("t_queries_100k")
    create_schema(url)
    rows = _rows(100_000)
    _copy(url, rows)
    return url, rows


@pytest.mark.slow
def test_filtered_paginated_search_on_100000_dossiers(big_db):
    url, rows = big_db
    flt = queries.DossierFilter(collectivite="saint-sever", flow="actes", objet="RUGBY",
                                date_from=date(2025, 6, 1), date_to=date(2026, 3, 15))
    lo, hi = datetime(2025, 6, 1, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC)
    expected = sorted(
        (r for r in rows if r["collectivite"] == "saint-sever" and r["flow"] == "actes"
         and "rugby" in r["objet"].lower() and lo <= r["created_at"] < hi),
        key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert len(expected) > 10
    with session_scope(url) as s:
        first = queries.search(s, flt, page=1, per_page=10)
        second = queries.search(s, flt, page=2, per_page=10)
        assert first.total == len(expected)
        assert [d.id for d in first.items] == [r["id"] for r in expected[:10]]
        assert [d.id for d in second.items] == [r["id"] for r in expected[10:20]]
        assert first.has_next and first.pages == -(-len(expected) // 10)

        # business keys: prefix match on IDActe / NomFic, exact hit by free text
        target = rows[4243]
        assert target["flow"] == "actes"
        hit = queries.search(s, queries.DossierFilter(idacte=target["idacte"]))
        assert [d.id for d in hit.items] == [target["id"]]
        pes = rows[3 * 1111]
        hit = queries.search(s, queries.DossierFilter(nomfic=pes["nomfic"]))
        assert [d.id for d in hit.items] == [pes["id"]]
        assert queries.search(s, queries.DossierFilter(text=pes["nomfic"])).total == 1
        # LIKE metacharacters typed by a user are literal, not wildcards
        assert queries.search(s, queries.DossierFilter(nomfic="PES_%")).total == 0
        assert queries.search(s, queries.DossierFilter(objet="%")).total == 0

        # state filter counts exactly
        n_transmis = sum(1 for r in rows if r["state"] == "transmis")
        assert queries.search(s, queries.DossierFilter(state="transmis"), per_page=1).total == n_transmis
        # out-of-range page is empty, not an error; per_page is capped
        assert queries.search(s, flt, page=10_000).items == []
        assert queries.search(s, per_page=10_000).per_page == queries.MAX_PER_PAGE


@pytest.mark.slow
def test_isolation_scope_is_applied_in_sql(big_db):
    url, rows = big_db
    with session_scope(url) as s:
        mine = queries.search(s, scope={"mugron"}, per_page=200)
        assert mine.total == sum(1 for r in rows if r["collectivite"] == "mugron")
        assert {d.collectivite for d in mine.items} == {"mugron"}
        # another collectivité's dossier is invisible, even by its exact id
        other = next(r for r in rows if r["collectivite"] == "saint-sever")
        assert queries.get_visible(s, other["id"], scope={"mugron"}) is None
        assert queries.get_visible(s, other["id"], scope=None).id == other["id"]
        assert queries.search(s, queries.DossierFilter(collectivite="saint-sever"), scope={"mugron"}).total == 0
        assert queries.search(s, scope=set()).total == 0
        dash = queries.dashboard(s, scope={"mugron"}, now=NOW)
        assert dash.total == mine.total and [c for c, _ in dash.by_collectivite] == ["mugron"]


@pytest.mark.slow
def test_dashboard_figures(big_db):
    url, rows = big_db
    with session_scope(url) as s:
        dash = queries.dashboard(s, now=NOW, days=14, stuck_after_hours={"actes": 4, "helios": 24, "sae": 24})
    assert dash.total == 100_000
    assert sum(n for _, _, n in dash.by_state) == 100_000
    assert dict((c, n) for c, _, n in dash.by_state)["archive"] == sum(1 for r in rows if r["state"] == "archive")
    assert len(dash.per_day) == 14 and dash.per_day[-1][0] == NOW.date()
    first_day = NOW.date() - timedelta(days=13)
    assert sum(n for _, n in dash.per_day) == sum(1 for r in rows if r["created_at"].date() >= first_day)
    # stuck: transmitted more than 4 h (actes) / 24 h (helios) ago and not acknowledged
    expected_stuck = [r for r in rows if r["state"] == "transmis" and
                      NOW - r["transmitted_at"] > timedelta(hours=4 if r["flow"] == "actes" else 24)]
    assert len(dash.stuck) == min(100, len(expected_stuck))
    assert dash.stuck[0].hours > dash.stuck[-1].hours
    # acknowledgment delays are 1..10 h by construction
    acked = [(r["acknowledged_at"] - r["created_at"]).total_seconds() / 3600 for r in rows if r["acknowledged_at"]]
    assert dash.ack_count == len(acked)
    assert 5 <= dash.ack_median_hours <= 6
    assert 9.5 <= dash.ack_p95_hours <= 10


def test_changed_since_timeline_and_visibility_rules(demat_db):
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="helios", original_name="PES.xml", sha256="b" * 64,
                           size=5, actor="api:agent.saintsever")
        service.transition(s, d, "valide", message="Document valide.")
        service.transition(s, d, "au_parapheur", message="Soumis au parapheur.")
        service.note(s, d, event="approbation", actor="maire.saintsever", message="Approuvé au parapheur.")
        service.transition(s, d, "rejete_parapheur", actor="maire.saintsever", message="Rejeté : montant faux.")
        dossier_id = d.id
    with session_scope(demat_db) as s:
        since = datetime.now(UTC) - timedelta(minutes=1)
        assert [x.id for x in queries.changed_since(s, since)] == [dossier_id]
        assert queries.changed_since(s, datetime.now(UTC) + timedelta(minutes=1)) == []
        assert queries.changed_since(s, since, scope={"cc-chalosse-tursan"}) == []
        tl = queries.timeline(service.get(s, dossier_id))
        assert [e.label for e in tl] == ["Reçu", "Validé", "Au parapheur", "Approbation au parapheur",
                                         "Rejeté au parapheur"]
        assert tl[-1].refusal and tl[-1].actor == "maire.saintsever" and "montant faux" in tl[-1].message

    config = load_config(REPO / "flows" / "config" / "demo.yaml")
    ops = ["admin", "operateur"]
    assert queries.visible_collectivites(config, "admin", operators=ops) is None
    assert queries.visible_collectivites(config, "agent.saintsever", operators=ops) == {"saint-sever"}
    assert queries.visible_collectivites(config, "president.chalosse", operators=ops) == {"cc-chalosse-tursan"}
    assert queries.visible_collectivites(config, "inconnu", operators=ops) == set()
    assert queries.artefact_label("prefecture_ARActe").startswith("Accusé")


def test_hostile_ids_and_texts_do_not_reach_the_database_as_errors(demat_db):
    with session_scope(demat_db) as s:
        assert queries.get_visible(s, "a\x00b") is None
        assert queries.get_visible(s, "x" * 500) is None
        assert queries.get_visible(s, "") is None
        assert queries.search(s, queries.DossierFilter(objet="'; DROP TABLE dossier; --")).total == 0
        assert queries.search(s, queries.DossierFilter(text="\\")).total == 0
        assert queries.search(s, queries.DossierFilter(objet="\x00", nomfic="\x00x", collectivite="\x00")).total == 0
