"""Every DAG file imports without error, stays cheap to parse, and declares what demat relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flows.config.models import MAX_CIRCUIT_STEPS

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
        steps = [f"parapheur_{i}" for i in range(1, MAX_CIRCUIT_STEPS + 1)]
        order = [t.task_id for t in dag.topological_sort()]
        assert order[0] == "validate" and order[-1] == "sign_and_transmit"
        assert [t for t in order if t.startswith("parapheur_")] == steps
        assert {dag.get_task(s).__class__.__name__ for s in steps} == {"ParapheurOperator"}
        # validate branches: to the first step, or (no human step: validate signed and transmitted
        # itself) to a terminal task the scheduler completes without a process
        assert dag.get_task("validate").downstream_task_ids == {"parapheur_1", "automatic_circuit"}
        automatic = dag.get_task("automatic_circuit")
        assert automatic.__class__.__name__ == "EmptyOperator" and not automatic.downstream_task_ids
        assert dag.get_task("validate").retries >= 3  # it may transmit: transport errors retry
        # any step may be the circuit's last: the signature follows each, and runs once none failed
        sign = dag.get_task("sign_and_transmit")
        assert sign.upstream_task_ids == set(steps)
        assert sign.trigger_rule == "none_failed_min_one_success"
        assert dag.get_task("sign_and_transmit").retries >= 3
        # thousands of dossiers may wait at the parapheur at once (runs active, no worker slot)
        assert dag.max_active_runs >= 10_000


def test_ingest_is_event_driven_with_a_periodic_safety_net(dagbag):
    dag = dagbag.dags["demat_ingest"]
    timetable = dag.timetable
    assert timetable.__class__.__name__ == "AssetOrTimeSchedule"
    # overlapping sweeps are safe (tests/unit/pipeline/test_inbox_ingest.py) and keep a drop from
    # waiting behind the previous drop's run
    assert 1 < dag.max_active_runs <= 8


def test_dag_files_import_without_heavy_modules():
    """Import every DAG file in one fresh interpreter; none may pull in the heavy domain libraries."""
    code = (
        "import sys, runpy, json\n"
        f"heavy = {HEAVY!r}\n"
        "out = {}\n"
        f"for f in sorted(__import__('glob').glob({str(DAGS / '*.py')!r})):\n"
        "    runpy.run_path(f)\n"
        "    out[f] = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result) >= 4
    offenders = {Path(f).name: mods for f, mods in result.items() if mods}
    assert offenders == {}, f"DAG files import heavy modules at parse time: {offenders}"


def test_sending_tasks_retry_with_backoff_within_a_bounded_delay(dagbag):
    """A counterpart down: transmission, collection and deposit retry, waiting longer each time,
    and give up (the task fails, the dossier still says why it waits) within about 2 hours."""
    from datetime import timedelta

    for dag_id, task_id in (("demat_acte", "sign_and_transmit"), ("demat_pes", "sign_and_transmit"),
                            ("demat_collect", "collect_and_deposit")):
        task = dagbag.dags[dag_id].get_task(task_id)
        assert task.retries >= 3 and task.retry_exponential_backoff and task.max_retry_delay
        worst = sum((min(task.retry_delay * 2 ** i, task.max_retry_delay) for i in range(task.retries)), timedelta())
        assert timedelta(minutes=1) < worst <= timedelta(hours=2), (dag_id, task_id, worst)


def test_nightly_batch_includes_the_retention_of_airflow_history(dagbag):
    dag = dagbag.dags["demat_nightly"]
    assert {"deposit_nightly", "tiers_report", "stuck_report", "purge_history"} <= set(dag.task_ids)
    assert dag.get_task("purge_history").retries >= 1  # a failed purge is retried, never blocks the rest
    assert dag.get_task("purge_history").upstream_task_ids == set()


def _weight(dag, task) -> int:
    """The priority the scheduler gives the task's instances (airflow.task.priority_strategy)."""
    from types import SimpleNamespace

    from airflow.task.priority_strategy import validate_and_load_priority_weight_strategy

    task.dag = dag
    return validate_and_load_priority_weight_strategy(task.weight_rule).get_weight(SimpleNamespace(task=task))


def test_tasks_that_keep_documents_moving_outrank_every_dossier_task(dagbag):
    """500 dossiers dropped at once must not hold the inbox sweep or the collection back (seen:
    nothing archived until every validation had run)."""
    dossier = {f"{d}.{t.task_id}": _weight(dagbag.dags[d], t)
               for d in ("demat_acte", "demat_pes") for t in dagbag.dags[d].tasks}
    service = {f"{d}.{t}": _weight(dagbag.dags[d], dagbag.dags[d].get_task(t))
               for d, t in (("demat_ingest", "sweep"), ("demat_collect", "collect_and_deposit"),
                            ("demat_actes_answers", "send_answers"), ("demat_alerts", "record_and_send"))}
    assert min(service.values()) > max(dossier.values()), (service, dossier)
    # within a dossier, later steps first: a batch finishes dossiers rather than validating them all
    for d in ("demat_acte", "demat_pes"):
        assert dossier[f"{d}.sign_and_transmit"] > dossier[f"{d}.parapheur_1"] > dossier[f"{d}.validate"]
