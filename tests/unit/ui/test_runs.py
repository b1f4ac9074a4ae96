"""runs.relaunch against a fake Airflow REST API: which tasks a retry clears, and what it never does."""

from __future__ import annotations

import json

import httpx
import pytest

RUN = "dossier__saint-sever-helios-20260101-0123456789"
BASE = f"/api/v2/dags/demat_pes/dagRuns/{RUN}"


@pytest.fixture
def airflow(monkeypatch):
    """A fake API server: the run's state and task states, and every request it received."""
    from demat_airflow.ui import runs

    world = {"run": "failed", "tasks": {}, "calls": [], "clear_status": 200}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        world["calls"].append((request.method, request.url.path, body))
        path = request.url.path
        if request.method == "GET" and path == BASE:
            return httpx.Response(404) if world["run"] == "absent" else httpx.Response(200, json={"state": world["run"]})
        if request.method == "GET" and path == f"{BASE}/taskInstances":
            return httpx.Response(200, json={"task_instances": [{"task_id": t, "state": s}
                                                                for t, s in world["tasks"].items()]})
        if path.endswith("/clearTaskInstances"):
            hit = [t for t in body["task_ids"] if t in world["tasks"]]
            return httpx.Response(world["clear_status"], json={"task_instances": [{"task_id": t} for t in hit]})
        if path.endswith("/clear"):
            return httpx.Response(world["clear_status"], json={})
        if path == "/api/v2/dags/demat_pes/dagRuns":
            return httpx.Response(200, json={})
        return httpx.Response(500)

    monkeypatch.setattr(runs, "_client", lambda token, timeout=20: httpx.Client(
        transport=httpx.MockTransport(handler), base_url="http://airflow", headers={"Authorization": f"Bearer {token}"}))
    return world


def _posts(world) -> list[tuple[str, dict]]:
    return [(path.rsplit("/", 1)[-1], body) for method, path, body in world["calls"] if method == "POST"]


def relaunch(step: str) -> str:
    from demat_airflow.ui import runs

    return runs.relaunch("tok", "demat_pes", RUN, "d1", step, actor="operateur")


def test_the_failed_tasks_and_what_follows_are_cleared(airflow):
    airflow["tasks"] = {"validate": "success", "parapheur_1": "success", "parapheur_2": "failed",
                        "parapheur_3": "skipped", "sign_and_transmit": "upstream_failed"}
    assert "parapheur_2" in relaunch("parapheur")
    [(what, body)] = _posts(airflow)
    assert what == "clearTaskInstances" and body["task_ids"] == ["parapheur_2"] and body["include_downstream"]
    assert body["dry_run"] is False and body["dag_run_id"] == RUN and "operateur" in body["note"]


def test_without_failed_task_the_step_starts_again_at_its_first_task(airflow):
    airflow["run"] = "success"
    airflow["tasks"] = {"validate": "success", "parapheur_10": "skipped", "parapheur_2": "skipped",
                        "parapheur_1": "success", "sign_and_transmit": "skipped"}
    relaunch("parapheur")
    assert _posts(airflow)[0][1]["task_ids"] == ["parapheur_1"]
    airflow["calls"].clear()
    relaunch("transmission")
    assert _posts(airflow)[0][1]["task_ids"] == ["sign_and_transmit"]


def test_transmission_of_an_automatic_circuit_starts_again_at_validate(airflow):
    """Without a human step the validate task signs and transmits (sign_and_transmit is skipped)."""
    airflow["run"] = "success"
    airflow["tasks"] = {"validate": "success", "automatic_circuit": "success", "parapheur_1": "skipped",
                        "sign_and_transmit": "skipped"}
    relaunch("transmission")
    assert _posts(airflow)[0][1]["task_ids"] == ["validate"]


def test_unknown_task_ids_fall_back_to_clearing_the_failed_tasks_of_the_run(airflow):
    airflow["tasks"] = {"valider": "success", "signer": "skipped"}  # a DAG whose task ids changed
    assert "en échec" in relaunch("transmission")
    assert [w for w, _ in _posts(airflow)] == ["clear"]
    assert _posts(airflow)[0][1] == {"dry_run": False, "only_failed": True, "note": "Relance demat (transmission) "
                                                                                    "par operateur"}


def test_running_run_is_left_alone_and_absent_run_is_created(airflow):
    airflow["run"] = "running"
    assert "déjà en cours" in relaunch("validation") and _posts(airflow) == []
    airflow["run"] = "absent"
    assert "créé" in relaunch("validation")
    [(what, body)] = _posts(airflow)
    assert what == "dagRuns" and body["dag_run_id"] == RUN and body["conf"] == {"dossier_id": "d1"}
    assert body["logical_date"] is None


def test_batch_steps_touch_no_run(airflow):
    airflow["run"] = "success"
    assert "traitement par lot" in relaunch("archivage") and _posts(airflow) == []


def test_refusal_by_airflow_is_reported_in_french(airflow):
    from demat_airflow.ui.hitl import AirflowApiError

    airflow["tasks"] = {"sign_and_transmit": "failed"}
    airflow["clear_status"] = 403  # a viewer's token: Airflow refuses both clears
    with pytest.raises(AirflowApiError, match="droits d'opérateur"):
        relaunch("transmission")
    assert [w for w, _ in _posts(airflow)] == ["clearTaskInstances", "clear"]
