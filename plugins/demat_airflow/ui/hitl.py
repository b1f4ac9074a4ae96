"""The parapheur requests of a user, and their answers, through Airflow's own REST API.

We call the API server's public endpoints with the caller's own JWT, so Airflow applies its
authorization (assigned users, DAG access) and its HITL resume logic exactly as for the REST
PATCH .../taskInstances/parapheur_<n>/-1/hitlDetails: the dossier's run moves on by the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

DOSSIER_DAGS = ("demat_acte", "demat_pes")
SETTLE_SECONDS = 5.0  # see simulators/signer.py: answering a just-parked task races the scheduler


def api_base() -> str:
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    if base.startswith("http"):
        return base
    host = conf.get("api", "host", fallback="127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  # nosec B104 - loopback call to ourselves
    return f"http://{host}:{conf.get('api', 'port', fallback='8080')}{base}"


@dataclass
class Pending:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    subject: str
    created_at: datetime
    ti_state: str | None
    assigned: list[str]

    @property
    def key(self) -> str:
        return f"{self.dag_id}|{self.run_id}|{self.task_id}|{self.map_index}"

    def settled(self, now: datetime | None = None) -> bool:
        """Answerable now: parked in awaiting_input for a few seconds (the settle rule)."""
        now = now or datetime.now(UTC)
        return self.ti_state == "awaiting_input" and (now - self.created_at).total_seconds() >= SETTLE_SECONDS


class AirflowApiError(RuntimeError):
    pass


def _client(token: str) -> httpx.Client:
    return httpx.Client(base_url=api_base(), headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        trust_env=False)


def pending_for(token: str, user_id: str) -> list[Pending]:
    """Unanswered parapheur requests of the dossier DAGs that this user may answer."""
    out: list[Pending] = []
    offset = 0
    with _client(token) as c:
        while True:
            try:
                r = c.get("/api/v2/dags/~/dagRuns/~/hitlDetails",
                          params={"response_received": "false", "limit": 100, "offset": offset})
            except httpx.HTTPError as exc:
                raise AirflowApiError(f"API d'Airflow injoignable ({api_base()}) : {exc}") from exc
            if r.status_code != 200:
                raise AirflowApiError(f"Airflow a répondu {r.status_code} à la liste des demandes : {r.text[:300]}")
            data = r.json()
            details = data.get("hitl_details", [])
            for d in details:
                ti = d.get("task_instance") or {}
                if ti.get("dag_id") not in DOSSIER_DAGS or d.get("response_received"):
                    continue
                assigned = [u.get("id") for u in d.get("assigned_users") or []]
                if assigned and user_id not in assigned:
                    continue
                created = datetime.fromisoformat(str(d["created_at"]).replace("Z", "+00:00"))
                out.append(Pending(ti["dag_id"], ti["dag_run_id"], ti["task_id"], int(ti.get("map_index", -1)),
                                   d.get("subject") or "", created, ti.get("state"), assigned))
            offset += len(details)
            if not details or offset >= int(data.get("total_entries", 0)):
                break
    return out


def respond(token: str, item: Pending, option: str, motif: str) -> tuple[bool, str]:
    """PATCH the HITL detail as the caller. Returns (done, French message)."""
    path = (f"/api/v2/dags/{quote(item.dag_id, safe='')}/dagRuns/{quote(item.run_id, safe='')}"
            f"/taskInstances/{quote(item.task_id, safe='')}/{item.map_index}/hitlDetails")
    try:
        with _client(token) as c:
            r = c.patch(path, json={"chosen_options": [option], "params_input": {"motif": motif}})
    except httpx.HTTPError as exc:
        return False, f"Airflow injoignable, décision non enregistrée ({exc})"
    if r.status_code == 200:
        return True, "décision enregistrée"
    if r.status_code == 409:
        return False, "déjà traité par ailleurs"
    if r.status_code == 403:
        return False, "vous n'êtes pas signataire de cette demande"
    return False, f"refusé par Airflow ({r.status_code}) : {r.text[:200]}"
