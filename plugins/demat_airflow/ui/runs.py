"""The Airflow side of the dossier actions: a dossier run's state, its relaunch, and "send now".

A retry is an operator's act on Airflow: it goes through Airflow's public REST API with the
operator's own JWT (like hitl.py), so Airflow checks the permission and records who cleared what.
"Send now" after an agent's answer or annulation is demat's own nudge (agents are Airflow viewers
and may not trigger DAGs): it creates a run of the answers DAG through Airflow's models inside the
API server; if it fails, the DAG's schedule sends the recorded message within the minute anyway.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from demat_airflow.task_ids import AUTOMATIC_TASK, PARAPHEUR_PREFIX, SIGN_TASK, VALIDATE_TASK
from demat_airflow.ui.hitl import AirflowApiError, api_base

log = logging.getLogger(__name__)

ANSWERS_DAG = "demat_actes_answers"
# Where each step starts in the dossier DAGs (plugins/demat_airflow/dags.py build_dossier_dag): a task id,
# or the prefix of a row of tasks (the parapheur steps parapheur_1..N). Every task there is idempotent, so
# re-running a step's tasks after it already progressed is harmless.
STEP_TASKS = {"validation": VALIDATE_TASK, "parapheur": PARAPHEUR_PREFIX, "transmission": SIGN_TASK}


def _client(token: str, timeout: float = 20) -> httpx.Client:
    return httpx.Client(base_url=api_base(), headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        trust_env=False)


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"


def run_state(token: str, dag_id: str, run_id: str) -> str:
    """queued | running | success | failed, or "absent" when Airflow has no such run."""
    from flows.pipeline.actions import RUN_ABSENT

    try:
        with _client(token, timeout=5) as c:  # read on every page an operator opens: fail fast
            r = c.get(_run_path(dag_id, run_id))
    except httpx.HTTPError as exc:
        raise AirflowApiError(f"API d'Airflow injoignable ({api_base()}) : {exc}") from exc
    if r.status_code == 404:
        return RUN_ABSENT
    if r.status_code != 200:
        raise AirflowApiError(f"Airflow a répondu {r.status_code} pour le run {run_id} : {r.text[:200]}")
    return str(r.json().get("state") or "")


def relaunch(token: str, dag_id: str, run_id: str, dossier_id: str, step: str, *, actor: str) -> str:
    """Make the dossier's run resume: the tasks that failed (and what follows them), else the step's first task.
    Returns what was done, in French."""
    from flows.pipeline.steps import md_text

    state = run_state(token, dag_id, run_id)
    note = f"Relance demat ({md_text(step, 100)}) par {md_text(actor, 200)}"  # Airflow renders notes as Markdown
    try:
        with _client(token) as c:
            if state == "absent":
                r = c.post(f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
                           json={"dag_run_id": run_id, "logical_date": None, "conf": {"dossier_id": dossier_id},
                                 "note": note})
                _ok(r, "création du run")
                return f"run {run_id} créé dans Airflow"
            if state in ("queued", "running"):
                return f"run {run_id} déjà en cours dans Airflow : il reprend de lui-même"
            if step not in STEP_TASKS:  # a batch step (collection, archive): its own DAG takes the dossier again
                return "le traitement par lot reprend le dossier à son prochain passage"
            tasks = _task_states(c, dag_id, run_id)
            targets = sorted(t for t, st in tasks.items() if st == "failed") or _first_of(step, tasks)
            if targets:
                r = c.post(f"/api/v2/dags/{quote(dag_id, safe='')}/clearTaskInstances",
                           json={"dry_run": False, "dag_run_id": run_id, "task_ids": targets,
                                 "include_downstream": True, "include_upstream": False, "only_failed": False,
                                 "reset_dag_runs": True, "note": note})
                if r.status_code == 200 and r.json().get("task_instances"):
                    return f"tâche(s) {', '.join(targets)} et suivantes relancées dans le run {run_id}"
            r = c.post(f"{_run_path(dag_id, run_id)}/clear", json={"dry_run": False, "only_failed": True, "note": note})
            _ok(r, "relance du run")
            return f"tâches en échec du run {run_id} relancées"
    except httpx.HTTPError as exc:
        raise AirflowApiError(f"API d'Airflow injoignable ({api_base()}) : {exc}") from exc


def _task_states(c: httpx.Client, dag_id: str, run_id: str) -> dict[str, str | None]:
    r = c.get(f"{_run_path(dag_id, run_id)}/taskInstances", params={"limit": 500})
    _ok(r, "lecture des tâches du run")
    return {t["task_id"]: t.get("state") for t in r.json().get("task_instances", [])}


def _first_of(step: str, tasks: dict[str, str | None]) -> list[str]:
    """The step's first task in this run: its exact id, else the lowest of its numbered row (parapheur_1...)."""
    start = STEP_TASKS[step]
    if step == "transmission" and tasks.get(AUTOMATIC_TASK) == "success":  # validate signed and transmitted
        return [VALIDATE_TASK]
    if start in tasks:
        return [start]
    row = [t for t in tasks if t.startswith(f"{start}_") and t.rpartition("_")[2].isdigit()]
    return [min(row, key=lambda t: int(t.rpartition("_")[2]))] if row else []


def _ok(r: httpx.Response, what: str) -> None:
    if r.status_code in (200, 201):
        return
    if r.status_code == 403:
        raise AirflowApiError(f"Airflow refuse la {what} à votre compte (403) : droits d'opérateur requis")
    raise AirflowApiError(f"Airflow a refusé la {what} ({r.status_code}) : {r.text[:200]}")


def send_now(actor: str) -> bool:
    """Best effort: a run of the answers DAG now, rather than at its next scheduled minute."""
    try:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.types import DagRunTriggeredByType

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        trigger_dag(ANSWERS_DAG, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=actor[:100],
                    run_id=f"demat_action__{stamp}", conf={}, logical_date=None,
                    note="Envoi immédiat demandé depuis demat")
        return True
    except Exception:  # noqa: BLE001 - the schedule sends it anyway; never fail the agent's action for this
        log.warning("déclenchement immédiat de %s impossible (l'envoi se fera au prochain passage)", ANSWERS_DAG,
                    exc_info=True)
        return False
