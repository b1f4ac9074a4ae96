"""Airflow's own REST API refuses agents, officials and VISA respondents (issue 14, part 1).

Against the running embedded platform: for every route and method of Airflow's /api/v2 (read from
its own /openapi.json) and of its UI API (/ui, the routes of Airflow's ui_router), called with the
JWT of an agent, an official and a VISA respondent of one collectivité, with path parameters
filled from real objects of the *other* collectivité (its dossier's run, task instance, log, XCom,
HITL request, event log, asset) and minimal valid bodies built from the schema: every write and
every read of Airflow's data is refused (401/403), but for a short allow-list. The same requests
as an operator succeed, so the sweep proves something. And the official's parapheur answer still
goes through demat (its service identity), with the official recorded as the one who decided.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
import requests

from flows.config import load_config
from flows.dossier import service
from flows.dossier.db import session_scope

pytestmark = pytest.mark.e2e

# agent ("viewer"), official and VISA respondent ("user") of the Chalosse; the dossier is Saint-Sever's
NON_OPERATORS = ("agent.chalosse", "president.chalosse", "dgs.chalosse")
WRITES = ("post", "put", "patch", "delete")

# Reads a non-operator may make, each with why (anything else must answer 401/403)
ALLOWED_READS = {
    "/api/v2/version": "the Airflow version, public",
    "/api/v2/monitor/health": "liveness of the components, public (no data)",
    "/api/v2/auth/login": "the login redirect, public",
    "/api/v2/auth/logout": "the logout redirect",
    "/api/v2/auth/refresh": "refreshes the caller's own token",
    # Airflow's navigation builds demat's Parapheur and Dossiers entries from the plugin list; it
    # names the installed plugins and their entries (importErrors: their load failures), no dossier
    "/api/v2/plugins": "navigation entries (demat's pages)",
    "/api/v2/plugins/importErrors": "same permission as the plugin list (AccessView.PLUGINS)",
    "/ui/config": "what the UI needs to draw itself (instance name, theme), any logged-in user",
    "/ui/auth/menus": "the caller's own menu: empty for them (asserted below)",
    "/ui/auth/me": "the caller's own name",
    "/ui/teams": "team names (multi-team is off: none)",
}
ALLOWED_WRITES = {
    ("post", "/ui/auth/token"): "a token for the caller themselves, as POST /auth/token (demat's API needs one)",
}


def _token(platform, user: str) -> str:
    r = requests.post(f"{platform.base_url}/auth/token",
                      json={"username": user, "password": platform.secrets["passwords"][user]}, timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()["access_token"]


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------------------ a real dossier
@pytest.fixture(scope="module")
def dossier(platform):
    """A Saint-Sever PES waiting at the parapheur: its run, task instances, logs, XComs, HITL request."""
    from flows.helios.generate import generate_pes

    coll = load_config(platform.state / "config.yaml").collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    sha = platform.drop(coll.slug, "helios", f"pes-isolation-{stamp}.xml", generate_pes(
        siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol, codbud=coll.helios.codbud,
        nomfic=f"PES_ISOL_{stamp}", seed=314))

    def parked():
        with session_scope(platform.database_url) as s:
            d = service.by_sha(s, sha)
            return d.id if d is not None and d.state == "au_parapheur" else None

    dossier_id = platform.wait(parked, time.monotonic() + 300, "the PES at the parapheur")
    admin = _h(_token(platform, "admin"))
    run = f"/api/v2/dags/demat_pes/dagRuns/dossier__{dossier_id}"
    platform.wait(lambda: requests.get(f"{platform.base_url}{run}/taskInstances/parapheur_1/-1/hitlDetails",
                                       headers=admin, timeout=30).status_code == 200,
                  time.monotonic() + 120, "the HITL request of parapheur_1")
    return dossier_id


def _first(platform, admin: dict, path: str, key: str, field: str, **params):
    r = requests.get(f"{platform.base_url}/api/v2{path}", headers=admin, params={"limit": 1, **params}, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    items = r.json().get(key) or []
    return items[0][field] if items else None


@pytest.fixture(scope="module")
def params(platform, dossier) -> dict[str, str]:
    """Path parameter values: real objects of Saint-Sever's dossier, read with an operator's token."""
    admin = _h(_token(platform, "admin"))
    run_id = f"dossier__{dossier}"
    dag = requests.get(f"{platform.base_url}/api/v2/dags/demat_pes/details", headers=admin, timeout=30).json()
    xcom_key = _first(platform, admin, f"/dags/demat_pes/dagRuns/{quote(run_id)}/taskInstances/validate/xcomEntries",
                      "xcom_entries", "key") or "return_value"
    return {
        "dag_id": "demat_pes", "dag_run_id": run_id, "run_id": run_id, "task_id": "validate", "map_index": "-1",
        "try_number": "1", "xcom_key": xcom_key,
        "event_log_id": str(_first(platform, admin, "/eventLogs", "event_logs", "event_log_id", dag_id="demat_pes")
                            or 1),
        "asset_id": str(_first(platform, admin, "/assets", "assets", "id") or 1),
        "asset_alias_id": "1", "backfill_id": "1", "version_number": "1", "import_error_id": "1",
        "connection_id": "demat_dgfip", "pool_name": "default_pool", "variable_key": "demat_cle",
        "file_token": dag.get("file_token") or "x", "section": "core", "option": "executor",
        "uri": "x", "name": "x", "key": xcom_key, "team_name": "x", "dag_warning_type": "x",
        "partition_key": "x", "scope": "x",
    }


# ------------------------------------------------------------------------------------------ the sweep
def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _example(spec: dict, schema: dict, depth: int = 0):
    """A minimal instance of `schema` (required fields only), valid enough to pass FastAPI's validation."""
    schema = _resolve(spec, schema)
    if depth > 6:
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for combo in ("anyOf", "oneOf", "allOf"):
        if combo in schema:
            options = [o for o in schema[combo] if _resolve(spec, o).get("type") != "null"] or schema[combo]
            return _example(spec, options[0], depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _example(spec, props.get(k, {}), depth + 1) for k in schema.get("required", [])}
    if kind == "array":  # one item of a list of objects (a bulk body's action), else the minimum
        items = _resolve(spec, schema.get("items", {}))
        n = max(schema.get("minItems", 0), 1 if items.get("type") == "object" or "anyOf" in items
                or "oneOf" in items or "properties" in items else 0)
        return [_example(spec, items, depth + 1) for _ in range(n)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return datetime.now(UTC).isoformat()
        return "x" * max(1, schema.get("minLength", 1))
    return None


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: quote(values.get(m.group(1), "x"), safe=""), path)


def _body_overrides(values: dict[str, str]) -> dict[tuple[str, str], dict]:
    """Bodies whose validators ask more than the schema says (a dry run: harmless if ever let in)."""
    return {("post", "/api/v2/dags/{dag_id}/clearDagRuns"): {
        "dry_run": True, "dag_runs": [{"dag_run_id": values["dag_run_id"], "dag_id": values["dag_id"]}]}}


def _calls(spec: dict, values: dict[str, str]):
    """(method, template, url path, query, json body, headers) for every operation of the OpenAPI spec."""
    overrides = _body_overrides(values)
    for template, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", *WRITES):
                continue
            query, headers = {}, {}
            for p in op.get("parameters", []):
                if p.get("in") == "query" and p.get("required"):
                    query[p["name"]] = values.get(p["name"]) or _example(spec, p.get("schema", {}))
                if p.get("in") == "header" and p.get("required"):
                    headers[p["name"]] = str(_example(spec, p.get("schema", {})))
            body = None
            content = (op.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                body = _example(spec, content["application/json"].get("schema", {}))
            body = overrides.get((method, template), body)
            yield method, template, _fill(template, values), query, body, headers


class _NoAnswer:
    """A refusal is immediate: a call still running after 20 s (a run's /wait) was let in."""

    status_code = 0
    text = "no answer within 20 s"


def _send(platform, token: str, method: str, path: str, query: dict, body, headers: dict | None = None):
    try:
        return requests.request(method.upper(), f"{platform.base_url}{path}", params=query, json=body,
                                headers={**(headers or {}), **_h(token)}, timeout=20, allow_redirects=False)
    except requests.Timeout:
        return _NoAnswer()


def _refused(r, template: str) -> bool:
    if r.status_code in (401, 403):
        return True
    # a backfill named by id answers 404 to whoever may not read its Dag (Airflow hides which ids
    # exist); none exists here, so an operator gets the same 404 (checked in the operator test)
    if "{backfill_id}" in template and r.status_code == 404 and "Backfill not found" in r.text:
        return True
    # polling a connection test: whoever may not read its connection gets the same 404 as for an
    # unknown token (and no connection test exists here)
    return (template == "/api/v2/connections/enqueue-test" and r.status_code == 404
            and "No connection test found" in r.text)


def test_every_airflow_api_route_refuses_non_operators(platform, params):
    spec = requests.get(f"{platform.base_url}/openapi.json", timeout=30).json()
    calls = [c for c in _calls(spec, params) if c[1].startswith("/api/v2/")]
    assert len(calls) > 100, len(calls)  # the whole public API, not a handful of routes
    assert any(c[0] == "patch" and c[1].endswith("/hitlDetails") for c in calls)
    leaks = []
    for user in NON_OPERATORS:
        token = _token(platform, user)
        for method, template, path, query, body, headers in calls:
            if method == "get" and template in ALLOWED_READS:
                continue
            r = _send(platform, token, method, path, query, body, headers)
            if not _refused(r, template):
                leaks.append(f"{user} {method.upper()} {path} -> {r.status_code} {r.text[:120]}")
    assert leaks == [], "\n".join(leaks)


def test_airflow_ui_api_refuses_non_operators(platform, params):
    """The /ui routes (Airflow's React UI: grid, dashboard, structure...) are not in /openapi.json:
    read them from Airflow's own router."""
    from airflow.api_fastapi.core_api.routes.ui import ui_router

    routes = [(m.lower(), r.path) for r in ui_router.routes for m in getattr(r, "methods", ()) if m != "HEAD"]
    assert len(routes) > 20, routes
    leaks = []
    for user in NON_OPERATORS:
        token = _token(platform, user)
        for method, template in routes:
            if (method == "get" and template in ALLOWED_READS) or (method, template) in ALLOWED_WRITES:
                continue
            path = _fill(template, params)
            r = _send(platform, token, method, path, {"dag_id": "demat_pes"}, {})
            if r.status_code not in (401, 403):
                leaks.append(f"{user} {method.upper()} {path} -> {r.status_code} {r.text[:120]}")
        menus = requests.get(f"{platform.base_url}/ui/auth/menus", headers=_h(token), timeout=30).json()
        assert menus["authorized_menu_items"] == [], (user, menus)
    assert leaks == [], "\n".join(leaks)


def test_execution_api_refuses_user_tokens(platform, params):
    """The task processes' API (/execution) takes task tokens only: a user's JWT reads no XCom,
    connection (SFTP keys) or variable there, not even an operator's."""
    run = quote(params["dag_run_id"], safe="")
    for user in (*NON_OPERATORS, "admin"):
        token = _token(platform, user)
        for path in (f"/execution/xcoms/demat_pes/{run}/validate/{params['xcom_key']}",
                     "/execution/connections/demat_dgfip", "/execution/variables/demat_cle"):
            r = requests.get(f"{platform.base_url}{path}", headers=_h(token), timeout=30)
            assert r.status_code in (401, 403), (user, path, r.status_code, r.text[:200])


def test_operators_still_reach_the_same_data(platform, params):
    """The sweep's paths are right: an operator reads the very objects the others were refused."""
    token = _token(platform, "operateur")
    run = f"/api/v2/dags/demat_pes/dagRuns/{quote(params['dag_run_id'])}"
    for path in (run, f"{run}/taskInstances", f"{run}/taskInstances/validate/logs/1",
                 f"{run}/taskInstances/validate/xcomEntries", f"{run}/taskInstances/parapheur_1/-1/hitlDetails",
                 f"/api/v2/eventLogs/{params['event_log_id']}", "/api/v2/dags/~/dagRuns/~/hitlDetails",
                 f"/api/v2/assets/{params['asset_id']}", "/api/v2/pools/default_pool",
                 "/ui/dags", "/api/v2/dags"):
        r = requests.get(f"{platform.base_url}{path}", headers=_h(token), timeout=60)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        agent = requests.get(f"{platform.base_url}{path}", headers=_h(_token(platform, "agent.chalosse")), timeout=60)
        assert agent.status_code == 403, (path, agent.status_code)
    r = requests.get(f"{platform.base_url}{run}/taskInstances/parapheur_1/-1/hitlDetails", headers=_h(token),
                     timeout=30).json()
    assert {"maire.saintsever", "demat-service"} <= {u["id"] for u in r["assigned_users"]}
    r = requests.post(f"{platform.base_url}/api/v2/dags/demat_pes/clearTaskInstances", headers=_h(token),
                      json={"dry_run": True, "dag_run_id": params["dag_run_id"], "task_ids": ["validate"]}, timeout=60)
    assert r.status_code == 200, r.text[:300]  # a write an operator may do (dry run: nothing changes)
    menus = requests.get(f"{platform.base_url}/ui/auth/menus", headers=_h(token), timeout=30).json()
    assert {"Dags", "Assets", "Audit Log", "XComs", "Required Actions"} <= set(menus["authorized_menu_items"])
    r = requests.get(f"{platform.base_url}/api/v2/backfills/1", headers=_h(token), timeout=30)
    assert r.status_code == 404 and "Backfill not found" in r.text  # the one 404 the sweep accepts


def test_the_official_answers_through_demat_as_himself(platform, dossier):
    """Airflow refuses the official's own HITL answer; demat's Parapheur takes it, answers Airflow with
    its service identity, and the journal names the official."""
    from simulators.signer import AirflowClient

    maire = AirflowClient(platform.base_url, "maire.saintsever", platform.secrets["passwords"]["maire.saintsever"])
    path = (f"/api/v2/dags/demat_pes/dagRuns/dossier__{dossier}/taskInstances/parapheur_1/-1/hitlDetails")
    r = requests.patch(f"{platform.base_url}{path}", headers=_h(maire.token()), timeout=30,
                       json={"chosen_options": ["Approuver"], "params_input": {"motif": ""}})
    assert r.status_code == 403, r.text
    # the Chalosse official sees nothing of it on demat's page either
    other = AirflowClient(platform.base_url, "president.chalosse", platform.secrets["passwords"]["president.chalosse"])
    assert all(d["task_instance"]["dag_run_id"] != f"dossier__{dossier}" for d in other.pending_requests(settled_seconds=0))

    def answered():
        for d in maire.pending_requests(settled_seconds=0):
            if d["task_instance"]["dag_run_id"] == f"dossier__{dossier}":
                return maire.respond(d, "Approuver").status_code in (200, 409)
        return False

    platform.wait(answered, time.monotonic() + 120, "the official's answer through demat's Parapheur")
    admin = _h(_token(platform, "admin"))
    detail = requests.get(f"{platform.base_url}{path}", headers=admin, timeout=30).json()
    assert detail["response_received"] and detail["chosen_options"] == ["Approuver"]
    assert detail["responded_by_user"] == {"id": "demat-service", "name": "maire.saintsever"}

    def journal():
        with session_scope(platform.database_url) as s:
            d = service.get(s, dossier)
            return [e.message for e in d.journal] if d.state != "au_parapheur" else None

    messages = platform.wait(journal, time.monotonic() + 120, "the dossier past the parapheur")
    assert any("Signature accordée par maire.saintsever" in m for m in messages), messages
