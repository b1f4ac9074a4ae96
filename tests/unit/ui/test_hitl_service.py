"""hitl.py against a fake Airflow REST API: demat answers with its service identity, for assigned users only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

RUN = "dossier__saint-sever-helios-20260101-0123456789"


def detail(run: str, assigned: list[str], *, dag: str = "demat_pes", answered: bool = False) -> dict:
    created = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return {"task_instance": {"dag_id": dag, "dag_run_id": run, "task_id": "parapheur_1", "map_index": -1,
                              "state": "awaiting_input"},
            "assigned_users": [{"id": u, "name": u} for u in assigned], "created_at": created,
            "subject": "Signature", "response_received": answered}


@pytest.fixture
def airflow(monkeypatch):
    from demat_airflow.ui import hitl

    world = {"details": [], "calls": [], "minted": []}

    def handler(request: httpx.Request) -> httpx.Response:
        world["calls"].append((request.method, request.url.path, request.headers.get("authorization"),
                               json.loads(request.content) if request.content else None))
        if request.method == "GET":
            return httpx.Response(200, json={"hitl_details": world["details"], "total_entries": len(world["details"])})
        return httpx.Response(200, json={})

    def mint(user: str) -> str:
        world["minted"].append(user)
        return f"jeton-service-pour-{user}"

    monkeypatch.setattr(hitl, "service_token", mint)
    monkeypatch.setattr(hitl, "_client", lambda token: httpx.Client(
        transport=httpx.MockTransport(handler), base_url="http://airflow", headers={"Authorization": f"Bearer {token}"}))
    return world


def test_pending_lists_only_requests_assigned_to_the_user(airflow):
    from demat_airflow.ui import hitl

    airflow["details"] = [
        detail(RUN, ["maire.saintsever", "operateur", "demat-service"]),
        detail("dossier__autre", ["president.chalosse", "demat-service"]),
        detail("dossier__sans-destinataire", []),  # nobody assigned: never "anyone" through demat
        detail("dossier__repondu", ["maire.saintsever"], answered=True),
        detail("manual__x", ["maire.saintsever"], dag="demat_watch"),
    ]
    pending = hitl.pending_for("maire.saintsever")
    assert [p.run_id for p in pending] == [RUN]
    assert airflow["minted"] == ["maire.saintsever"]
    assert airflow["calls"][0][2] == "Bearer jeton-service-pour-maire.saintsever"  # never the caller's token
    assert hitl.pending_for("agent.chalosse") == []


def test_respond_uses_the_service_identity_for_an_assigned_user_only(airflow):
    from demat_airflow.ui import hitl

    airflow["details"] = [detail(RUN, ["maire.saintsever", "demat-service"])]
    item = hitl.pending_for("maire.saintsever")[0]
    airflow["calls"].clear()
    ok, why = hitl.respond("agent.saintsever", item, "Approuver", "")
    assert not ok and "pas signataire" in why and airflow["calls"] == []  # nothing reached Airflow
    ok, why = hitl.respond("maire.saintsever", item, "Rejeter", "montant erroné")
    assert ok, why
    method, path, auth, body = airflow["calls"][0]
    assert method == "PATCH" and path.endswith(f"/dagRuns/{RUN}/taskInstances/parapheur_1/-1/hitlDetails")
    assert auth == "Bearer jeton-service-pour-maire.saintsever"
    assert body == {"chosen_options": ["Rejeter"], "params_input": {"motif": "montant erroné"}}


def test_missing_service_identity_is_a_french_error_not_a_crash(monkeypatch):
    from demat_airflow.ui import hitl

    class Manager:
        def service_token(self, user, *, expiration_time_in_seconds):
            raise ValueError("identité de service 'demat-service' absente ou inactive dans FAB")

    import airflow.api_fastapi.app as app

    monkeypatch.setattr(app, "get_auth_manager", lambda: Manager())
    with pytest.raises(hitl.AirflowApiError, match="Identité de service demat indisponible"):
        hitl.service_token("maire.saintsever")
    monkeypatch.setattr(app, "get_auth_manager", lambda: object())
    with pytest.raises(hitl.AirflowApiError, match="DematAuthManager"):
        hitl.service_token("maire.saintsever")
