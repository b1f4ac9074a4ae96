"""The parapheur requests of a user, and their answers, through Airflow's own REST API.

Officials and VISA respondents may not reach Airflow's HITL API themselves (issue 14: it shows and
answers every collectivité's requests). demat checks them (logged in, assigned to the request, the
dossier's collectivité theirs: app.py), then calls the API server's public endpoints with demat's
service identity: a JWT minted here, inside the API server, for a few minutes, never sent to a
browser (`service_token`). The token names the official it acts for, so Airflow records
responded_by = {id: the service identity, name: the official} and demat's journal says who decided.
Airflow still applies its HITL checks (the service identity is one of the assigned users, added by
operators.py) and its resume logic, exactly as for the REST PATCH
.../taskInstances/parapheur_<n>/-1/hitlDetails: the dossier's run moves on by the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

SERVICE_TOKEN_SECONDS = 300  # one page view or one batch of decisions

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


def service_token(on_behalf_of: str) -> str:
    """A short-lived JWT of demat's service identity acting for `on_behalf_of`, minted by the auth
    manager in this process (DematAuthManager, or DematFabAuthManager in the compose deployment)."""
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    mint = getattr(manager, "service_token", None)
    if mint is None:
        raise AirflowApiError(
            f"Le gestionnaire d'authentification d'Airflow ({type(manager).__name__}) n'a pas d'identité de service "
            "demat : configurez AIRFLOW__CORE__AUTH_MANAGER=demat_airflow.auth_manager.DematAuthManager (ou "
            "demat_airflow.fab_auth_manager.DematFabAuthManager avec FAB).")
    try:
        return mint(on_behalf_of, expiration_time_in_seconds=SERVICE_TOKEN_SECONDS)
    except ValueError as exc:  # e.g. the FAB service account is missing: say so, never a 500
        raise AirflowApiError(f"Identité de service demat indisponible : {exc}") from exc


def _client(token: str) -> httpx.Client:
    return httpx.Client(base_url=api_base(), headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        trust_env=False)


def pending_for(user_id: str) -> list[Pending]:
    """Unanswered parapheur requests of the dossier DAGs that this user is assigned to answer."""
    out: list[Pending] = []
    offset = 0
    with _client(service_token(user_id)) as c:
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
                if user_id not in assigned:  # never "anyone": demat assigns every parapheur step
                    continue
                created = datetime.fromisoformat(str(d["created_at"]).replace("Z", "+00:00"))
                out.append(Pending(ti["dag_id"], ti["dag_run_id"], ti["task_id"], int(ti.get("map_index", -1)),
                                   d.get("subject") or "", created, ti.get("state"), assigned))
            offset += len(details)
            if not details or offset >= int(data.get("total_entries", 0)):
                break
    return out


def respond(user_id: str, item: Pending, option: str, motif: str) -> tuple[bool, str]:
    """PATCH the HITL detail for `user_id` (checked by the caller: one of item.assigned) with the
    service identity. Returns (done, French message)."""
    if user_id not in item.assigned:
        return False, "vous n'êtes pas signataire de cette demande"
    path = (f"/api/v2/dags/{quote(item.dag_id, safe='')}/dagRuns/{quote(item.run_id, safe='')}"
            f"/taskInstances/{quote(item.task_id, safe='')}/{item.map_index}/hitlDetails")
    try:
        token = service_token(user_id)
    except AirflowApiError as exc:
        return False, f"décision non enregistrée ({exc})"
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
