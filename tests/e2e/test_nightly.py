"""The nightly batch inside the platform: every task succeeds in a real task process.

The retention task's unit and integration tests passed while the first nightly run inside the
platform failed: Airflow 3 hides its own database URL from task processes. Only a run by the real
scheduler, in a real task process, shows what those processes can reach.
"""

from __future__ import annotations

import time

import pytest
import requests

from simulators.signer import AirflowClient

pytestmark = pytest.mark.e2e
NIGHTLY_TASKS = {"deposit_nightly", "tiers_report", "stuck_report", "purge_history", "refresh_crls", "purge_documents"}


def test_nightly_run_completes_every_task_including_the_retention(platform):
    admin = AirflowClient(platform.base_url, "admin", platform.secrets["passwords"]["admin"])
    api = f"{platform.base_url}/api/v2/dags/demat_nightly/dagRuns"

    def headers() -> dict:
        return {"Authorization": f"Bearer {admin.token()}"}

    r = requests.post(api, json={"logical_date": None, "conf": {}}, headers=headers(), timeout=20)
    assert r.status_code in (200, 201), r.text
    run_id = r.json()["dag_run_id"]

    def tasks() -> dict[str, dict]:
        got = requests.get(f"{api}/{run_id}/taskInstances", headers=headers(), timeout=20).json()
        return {t["task_id"]: t for t in got.get("task_instances", [])}

    def finished():
        state = requests.get(f"{api}/{run_id}", headers=headers(), timeout=20).json().get("state")
        return state if state in ("success", "failed") else None

    state = platform.wait(finished, time.monotonic() + 420, f"demat_nightly run {run_id} finished",
                          explain=lambda: str({k: t["state"] for k, t in tasks().items()}))
    found = tasks()
    assert set(found) == NIGHTLY_TASKS
    assert {k: t["state"] for k, t in found.items()} == dict.fromkeys(NIGHTLY_TASKS, "success"), state
    assert found["purge_history"]["try_number"] == 1  # not a retry hiding a first failure
    xcom = requests.get(f"{api}/{run_id}/taskInstances/purge_history/xcomEntries/return_value",
                        headers=headers(), timeout=20).json()
    assert "runs_dossiers_supprimes" in str(xcom.get("value")), xcom
