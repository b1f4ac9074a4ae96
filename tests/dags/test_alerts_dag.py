"""The alerts DAG: parsed alone, cheap, one task a minute."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_alerts_dag_records_then_sends_every_minute():
    home = tempfile.mkdtemp(prefix="demat-airflow-home-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "demat_alerts.py"))
    assert bag.import_errors == {}
    dag = bag.dags["demat_alerts"]
    assert [t.task_id for t in dag.topological_sort()] == ["record_and_send"]  # one process a minute
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.timetable.delta == timedelta(minutes=1)
