"""The nightly retention of Airflow's history, on a real Airflow schema (`airflow db migrate`).

Finished runs of final dossiers go, with their task instances, XComs and HITL answers (the
schema's cascades); a dossier still in progress, a run still running (a parapheur may wait
weeks) and recent runs stay. The periodic DAGs' old runs go through `airflow db clean`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.pipeline.retention import disposable_runs

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=1)


@pytest.fixture(scope="module")
def airflow_db(pg_server, tmp_path_factory):
    """A real, migrated Airflow 3 metadata database."""
    pg_server.ensure_database("airflow_retention")
    url = pg_server.url("airflow_retention")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow")), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    migrated = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                              capture_output=True, text=True, timeout=600)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return url, env


def _run(conn, dag_id: str, run_id: str, state: str, end: datetime | None, *, hitl: bool = False) -> None:
    start = (end or NOW) - timedelta(minutes=5)
    conn.execute(text("INSERT INTO dag_run (dag_id, run_id, run_type, run_after, state, start_date, end_date) "
                      "VALUES (:d, :r, 'manual', :s, :st, :s, :e)"), {"d": dag_id, "r": run_id, "s": start,
                                                                    "st": state, "e": end})
    run_pk = conn.scalar(text("SELECT id FROM dag_run WHERE dag_id = :d AND run_id = :r"), {"d": dag_id, "r": run_id})
    ti = uuid.uuid4()
    conn.execute(text("INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, try_number, pool, pool_slots, "
                      "state, start_date, end_date) VALUES (:id, 'parapheur_1', :d, :r, -1, 1, 'default_pool', 1, "
                      "'success', :s, :e)"), {"id": ti, "d": dag_id, "r": run_id, "s": start, "e": end})
    conn.execute(text("INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp) "
                      "VALUES (:pk, 'parapheur_1', -1, 'return_value', :d, :r, '\"x\"', :s)"),
                 {"pk": run_pk, "d": dag_id, "r": run_id, "s": start})
    if hitl:
        conn.execute(text("INSERT INTO hitl_detail (ti_id, options, subject, params, created_at, params_input) "
                          "VALUES (:ti, '[\"Approuver\"]', 'Parapheur', '{}', :s, '{}')"), {"ti": ti, "s": start})


def _dossier(settings, state: str, n: int) -> str:
    with session_scope(settings.database_url) as session:
        d = service.create(session, collectivite="saint-sever", flow="actes", original_name=f"a{n}.pdf",
                           sha256=hashlib.sha256(str(n).encode()).hexdigest(), size=1, doc_type="")
        d.state = state
        return d.id


def _count(conn, table: str, **where) -> int:
    clause = " AND ".join(f"{k} = :{k}" for k in where) or "TRUE"
    return conn.scalar(text(f"SELECT count(*) FROM {table} WHERE {clause}"), where)  # nosec B608 - test constants


def test_finished_runs_of_final_dossiers_go_and_everything_in_progress_stays(airflow_db, demo_settings, monkeypatch):
    sys.path.insert(0, str(ROOT / "plugins"))
    from demat_airflow.retention import run_retention

    url, env = airflow_db
    archived = _dossier(demo_settings, "archive", 1)        # final, run ended 40 days ago: goes
    refused = _dossier(demo_settings, "refuse_etat", 2)      # final, run failed 40 days ago: goes
    waiting = _dossier(demo_settings, "transmis", 3)         # not final (awaiting the ARActe): stays
    parked = _dossier(demo_settings, "au_parapheur", 4)      # run still running since 40 days: stays
    fresh = _dossier(demo_settings, "archive", 5)           # final but ended yesterday: stays
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn, "demat_acte", f"dossier__{archived}", "success", OLD, hitl=True)
        _run(conn, "demat_acte", f"dossier__{refused}", "failed", OLD)
        _run(conn, "demat_acte", f"dossier__{waiting}", "success", OLD)
        _run(conn, "demat_acte", f"dossier__{parked}", "running", None)
        conn.execute(text("UPDATE dag_run SET start_date = :o WHERE run_id = :r"), {"o": OLD, "r": f"dossier__{parked}"})
        _run(conn, "demat_acte", f"dossier__{fresh}", "success", RECENT)
        _run(conn, "demat_acte", "manual__by_an_operator", "success", OLD)  # not a dossier's run: stays
        for i in range(3):
            _run(conn, "demat_collect", f"scheduled__old{i}", "success", OLD + timedelta(minutes=i))
        _run(conn, "demat_collect", "scheduled__recent", "success", RECENT)

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # what a task process sees: Airflow 3's supervisor masks its own database URL (the first nightly
    # run inside the platform failed on it); the deployment hands the retention its own variable
    for k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN"):
        monkeypatch.setenv(k, "airflow-db-not-allowed:///")
    monkeypatch.setenv("DEMAT_AIRFLOW_DATABASE_URL", url)
    from demat_airflow.context import airflow_database_url

    assert airflow_database_url() == url
    out = run_retention(url, lambda ids: disposable_runs(demo_settings, ids), dossier_days=30, periodic_days=3)
    assert out["runs_dossiers_supprimes"] == 2 and out["runs_dossiers_examines"] == 4

    with engine.connect() as conn:
        left = set(conn.scalars(text("SELECT run_id FROM dag_run WHERE dag_id = 'demat_acte'")))
        assert left == {f"dossier__{waiting}", f"dossier__{parked}", f"dossier__{fresh}", "manual__by_an_operator"}
        for table in ("task_instance", "xcom"):  # the cascades took the dependants, nothing orphaned
            assert _count(conn, table, run_id=f"dossier__{archived}") == 0
            assert _count(conn, table, run_id=f"dossier__{waiting}") == 1
        assert _count(conn, "hitl_detail") == 0
        collect = set(conn.scalars(text("SELECT run_id FROM dag_run WHERE dag_id = 'demat_collect'")))
        assert collect == {"scheduled__recent"}

    again = run_retention(url, lambda ids: disposable_runs(demo_settings, ids), dossier_days=30, periodic_days=3)
    assert again["runs_dossiers_supprimes"] == 0  # idempotent
    with session_scope(demo_settings.database_url) as session:  # demat's own record is untouched
        assert service.get(session, archived).state == "archive"


def test_without_its_database_url_the_retention_says_what_to_set(monkeypatch):
    sys.path.insert(0, str(ROOT / "plugins"))
    from demat_airflow.context import airflow_database_url

    monkeypatch.delenv("DEMAT_AIRFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-db-not-allowed:///")
    with pytest.raises(RuntimeError, match="DEMAT_AIRFLOW_DATABASE_URL"):
        airflow_database_url()
