"""A simulated elected official: answers parapheur steps through Airflow's REST API, as the UI does.

It logs in with the official's own account, lists the human-in-the-loop requests assigned to
that account and approves (or rejects with a reason) each one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import requests

# when each parked attempt (task instance id, try) was first seen, shared by every client of this
# process: callers often build a new client per poll
_FIRST_SEEN: dict[tuple, float] = {}

APPROVE = "Approuver"
REJECT = "Rejeter"


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 20
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            r = requests.post(f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password},
                              timeout=self.timeout)
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def get(self, path: str, **params) -> dict:
        r = requests.get(f"{self.base_url}/api/v2{path}", params=params, headers=self._headers(), timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def patch(self, path: str, payload: dict) -> requests.Response:
        return requests.patch(f"{self.base_url}/api/v2{path}", json=payload, headers=self._headers(),
                              timeout=self.timeout)

    def pending_requests(self, *, settled_seconds: float = 5.0) -> list[dict]:
        """HITL requests waiting for an answer, assigned to this user, parked for a few seconds.

        Answering within a second of the task being parked races the scheduler's processing of the
        parking process's exit (Airflow 3.3 then marks the resumed task failed): a person never
        answers that fast, and neither does this simulated one. The wait counts from when this
        client first saw each attempt parked (a retry reuses the request's creation time).
        """
        data = self.get("/dags/~/dagRuns/~/hitlDetails", response_received="false", limit=500)
        out = []
        now = time.monotonic()
        for detail in data.get("hitl_details", []):
            if detail.get("response_received"):
                continue
            ti = detail.get("task_instance") or {}
            if ti.get("state") not in (None, "awaiting_input", "deferred"):
                continue
            key = (ti.get("id"), ti.get("try_number"))
            first = _FIRST_SEEN.setdefault(key, now)
            if now - first < settled_seconds:
                continue
            assigned = {u.get("id") for u in detail.get("assigned_users") or []}
            if assigned and self.username not in assigned:
                continue
            out.append(detail)
        return out

    def respond(self, detail: dict, option: str, motif: str = "") -> requests.Response:
        ti = detail["task_instance"]
        path = (f"/dags/{quote(ti['dag_id'], safe='')}/dagRuns/{quote(ti['dag_run_id'], safe='')}"
                f"/taskInstances/{quote(ti['task_id'], safe='')}/{ti.get('map_index', -1)}/hitlDetails")
        return self.patch(path, {"chosen_options": [option], "params_input": {"motif": motif}})


def answer_all(client: AirflowClient, decide: Callable[[dict], tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Answer every pending request of this official. Returns (run id, option) pairs."""
    decide = decide or (lambda detail: (APPROVE, ""))
    done = []
    for detail in client.pending_requests():
        option, motif = decide(detail)
        r = client.respond(detail, option, motif)
        if r.status_code in (200, 409):  # 409: already answered (by a concurrent signer or a retry)
            done.append((detail["task_instance"]["dag_run_id"], option))
        else:
            r.raise_for_status()
    return done
