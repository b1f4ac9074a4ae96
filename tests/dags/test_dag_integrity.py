"""Every DAG file imports without error, stays cheap to parse, and declares what demat relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
HEAVY = ("lxml", "pandas", "great_expectations", "signxml", "paramiko", "asyncssh", "numpy", "flows.helios",
         "flows.quality", "flows.signature", "flows.archive", "flows.actes")


@pytest.fixture(scope="module")
def dagbag():
    home = tempfile.mkdtemp(prefix="demat-airflow-home-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
    os.environ.setdefault("DEMAT_STATE", home)
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), include_examples=False) if "include_examples" in DagBag.__init__.__code__.co_varnames else DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors


def test_expected_dags(dagbag):
    assert {"demat_ingest", "demat_acte", "demat_pes", "demat_collect"} <= set(dagbag.dag_ids)


def test_dossier_dags_have_parapheur_between_validation_and_transmission(dagbag):
    for dag_id in ("demat_acte", "demat_pes"):
        dag = dagbag.dags[dag_id]
        assert [t.task_id for t in dag.topological_sort()] == ["validate", "parapheur", "sign_and_transmit"]
        assert dag.get_task("parapheur").__class__.__name__ == "ParapheurOperator"
        assert dag.get_task("sign_and_transmit").retries >= 3


def test_ingest_is_event_driven_with_a_periodic_safety_net(dagbag):
    dag = dagbag.dags["demat_ingest"]
    timetable = dag.timetable
    assert timetable.__class__.__name__ == "AssetOrTimeSchedule"
    assert dag.max_active_runs == 1


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_dag_file_imports_fast_without_heavy_modules(dag_file):
    """Import each DAG file in a fresh interpreter and list which heavy modules it pulled in."""
    code = (
        "import sys, time, runpy; t=time.perf_counter(); "
        f"runpy.run_path({str(DAGS / dag_file)!r}); "
        f"heavy=[m for m in {HEAVY!r} if m in sys.modules]; print(repr(heavy))"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    heavy = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr output
    assert heavy == [], f"{dag_file} imports heavy modules at parse time: {heavy}"
