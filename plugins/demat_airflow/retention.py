"""Keep Airflow's history small: the nightly retention of the metadata database.

The upstream scheduler and UI slow down as dag_run and task_instance grow, and demat starts one
run per dossier plus a collection run every 20 s. Two rules, both safe for work in progress:

- a dossier's run goes once it is finished *and* its dossier is final in demat's own record
  (flows.pipeline.retention decides), older than `dossier_days`. `airflow db clean` cannot be
  used here: it selects dag runs by start date whatever their state, and a dossier may wait
  weeks at the parapheur. The delete is one statement on dag_run, whose dependants (task
  instances, XComs, HITL answers, history, notes) go with it by the schema's ON DELETE CASCADE.
- the periodic DAGs' runs (collection, alerts, ingest, watch, ...) and old audit-log, job and
  asset-event rows go through `airflow db clean` after `periodic_days` (it keeps each DAG's
  latest run).
"""

from __future__ import annotations

import os
import re
import subprocess  # nosec B404 - runs the `airflow` CLI with a fixed argument list
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

DOSSIER_DAGS = ("demat_acte", "demat_pes")
PERIODIC_DAGS = ("demat_collect", "demat_alerts", "demat_ingest", "demat_watch", "demat_actes_answers",
                 "demat_nightly", "demat_classification", "demat_annulation")
PERIODIC_TABLES = ("dag_run", "log")  # task instances, XComs, history: by the cascades
GLOBAL_TABLES = ("job", "asset_event", "import_error")
UPSTREAM_UNCLEANABLE = {"deadline"}
_FAILED_TABLE = re.compile(r"Encountered error when attempting to clean table '([a-z_]+)'")

_CANDIDATES = text("""
    SELECT dag_id, run_id, end_date FROM dag_run
    WHERE dag_id = ANY(:dags) AND state IN ('success', 'failed') AND end_date < :cutoff
      AND (end_date, run_id) > (:after_date, :after_run)
    ORDER BY end_date, run_id LIMIT :batch
""")
_DELETE = text("""
    DELETE FROM dag_run d
    WHERE d.dag_id = :dag_id AND d.run_id = ANY(:run_ids) AND d.state IN ('success', 'failed')
      AND NOT EXISTS (SELECT 1 FROM backfill_dag_run b WHERE b.dag_run_id = d.id)
""")


@dataclass
class Purge:
    examined: int = 0
    deleted: int = 0


def purge_dossier_runs(airflow_url: str, disposable, *, before: datetime, batch: int = 1000) -> Purge:
    """Delete finished dossier runs ended before `before` whose dossier `disposable(run_ids)` releases."""
    out = Purge()
    engine = create_engine(airflow_url, pool_pre_ping=True)
    after = (datetime(1970, 1, 1, tzinfo=UTC), "")
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(_CANDIDATES, {"dags": list(DOSSIER_DAGS), "cutoff": before,
                                                  "after_date": after[0], "after_run": after[1],
                                                  "batch": batch}).all()
            if not rows:
                return out
            after = (rows[-1].end_date, rows[-1].run_id)
            out.examined += len(rows)
            keep = disposable([r.run_id for r in rows])
            with engine.begin() as conn:  # one short transaction per batch
                for dag_id in DOSSIER_DAGS:
                    ids = [r.run_id for r in rows if r.dag_id == dag_id and r.run_id in keep]
                    if ids:
                        out.deleted += conn.execute(_DELETE, {"dag_id": dag_id, "run_ids": ids}).rowcount
    finally:
        engine.dispose()


def db_clean_commands(before: datetime) -> list[list[str]]:
    """The `airflow db clean` invocations for the periodic DAGs and the global tables."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    common = ["db", "clean", "--clean-before-timestamp", before.isoformat(), "--skip-archive", "--yes"]
    return [
        [airflow, *common, "--dag-ids", ",".join(PERIODIC_DAGS), "--tables", ",".join(PERIODIC_TABLES)],
        [airflow, *common, "--tables", ",".join(GLOBAL_TABLES)],
    ]


def clean_periodic(airflow_url: str, before: datetime, *, timeout: float = 3600) -> None:
    """Run `airflow db clean`; a table it fails to clean fails the task, except the known upstream one.

    Airflow 3.3 declares a dag_id column for `deadline` (a dependant of dag_run) that the table
    does not have, so `--dag-ids` always fails on it (and --error-on-cleanup-failure with it);
    demat sets no deadlines, the table stays empty. The CLI gets `airflow_url` explicitly: inside a
    task process Airflow has masked its own.
    """
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url}
    env.pop("AIRFLOW__CORE__SQL_ALCHEMY_CONN", None)  # the deprecated alias, masked as well
    for cmd in db_clean_commands(before):
        done = subprocess.run(cmd, timeout=timeout, env=env,  # nosec B603 - fixed argv
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        failed = set(_FAILED_TABLE.findall(done.stdout)) - UPSTREAM_UNCLEANABLE
        if done.returncode != 0 or failed:
            raise RuntimeError(f"airflow db clean a échoué (code {done.returncode}, tables {sorted(failed)}) : "
                               f"{done.stdout[-2000:]}")


def run_retention(airflow_url: str, disposable, *, dossier_days: int, periodic_days: int,
                  now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    purge = purge_dossier_runs(airflow_url, disposable, before=now - timedelta(days=dossier_days))
    clean_periodic(airflow_url, now - timedelta(days=periodic_days))
    return {"runs_dossiers_examines": purge.examined, "runs_dossiers_supprimes": purge.deleted,
            "historique_periodique_avant": (now - timedelta(days=periodic_days)).isoformat()}
