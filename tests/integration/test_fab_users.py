"""The compose deployment's users: created in Airflow's FAB auth manager from the configuration.

A real `airflow db migrate` with the FAB auth manager on a real PostgreSQL, then demat's init
step creates one user per agent, official, VISA respondent and operator, with the right role,
and a second run changes nothing. Passwords stay in the state's secrets.json, never printed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"

CREATE = """
import json
from pathlib import Path
from embedded.platform import Layout, prepare_state
from embedded.distributed import ensure_fab_users
layout = Layout(Path({state!r}))
prepare_state(layout, Path({config!r}))
print(json.dumps(ensure_fab_users(layout)))
"""

# What FAB (through demat's auth manager for the compose deployment) decides for each user, and the
# restricted role's exact permissions. Runs in a process of its own with the FAB environment.
DECIDE = """
import json
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagAccessEntity, DagDetails
from airflow.api_fastapi.common.types import MenuItem
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from demat_airflow.fab_auth_manager import DematFabAuthManager

am = DematFabAuthManager()
out = {}
with get_application_builder() as appbuilder:
    am.appbuilder = appbuilder
    sm = appbuilder.sm
    role = sm.find_role("Demat")
    out["role"] = sorted([p.action.name, p.resource.name] for p in role.permissions)
    for name in ("agent.chalosse", "maire.saintsever", "operateur", "demat-service"):
        u = sm.find_user(username=name)
        dag = {f"{m} {e.value if e else ''}": am.is_authorized_dag(method=m, access_entity=e,
                                                                   details=DagDetails(id="demat_pes"), user=u)
               for m in ("GET", "PUT", "POST", "DELETE") for e in (None, *DagAccessEntity)}
        out[name] = {
            "dag": sorted(k for k, v in dag.items() if v),
            "asset": am.is_authorized_asset(method="GET", user=u),
            "pool": am.is_authorized_pool(method="GET", user=u),
            "variable": am.is_authorized_variable(method="GET", user=u),
            "connection": am.is_authorized_connection(method="GET", user=u),
            "configuration": am.is_authorized_configuration(method="GET", user=u),
            "views": sorted(v.value for v in AccessView if am.is_authorized_view(access_view=v, user=u)),
            "menu": sorted(m.value for m in am.filter_authorized_menu_items(list(MenuItem), user=u)),
            "hitl": am.is_authorized_hitl_task(assigned_users={"maire.saintsever", "demat-service"}, user=u),
        }
    # the service identity's token, minted as in the API server, acting for the official
    import asyncio
    token = am.service_token("maire.saintsever", expiration_time_in_seconds=60)
    claims = asyncio.run(am._get_token_validator().avalidated_claims(token))
    svc = am.deserialize_user(claims)
    out["minted"] = {"id": svc.get_id(), "name": svc.get_name(), "claims": sorted(claims),
                     "service_id": str(sm.find_user(username="demat-service").id),
                     "hitl": am.is_authorized_hitl_task(assigned_users={"maire.saintsever", "demat-service"}, user=svc),
                     "put_hitl": am.is_authorized_dag(method="PUT", access_entity=DagAccessEntity.HITL_DETAIL,
                                                      details=DagDetails(id="demat_pes"), user=svc)}
    # the claim counts for the service identity only
    agent = sm.find_user(username="agent.chalosse")
    forged = am.deserialize_user({**claims, "sub": str(agent.id)})
    out["forged_name"] = forged.get_name()
print(json.dumps(out))
"""

# An older demat gave officials FAB's User role and agents Viewer: the next init moves them.
OLD = """
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    assert sm.add_user("agent.saintsever", "a", "b", "agent.saintsever@demat.invalid", sm.find_role("Viewer"), "x" * 20)
    assert sm.add_user("dgs.chalosse", "a", "b", "dgs.chalosse@demat.invalid", sm.find_role("User"), "x" * 20)
    assert sm.add_user("finances.chalosse", "a", "b", "finances.chalosse@demat.invalid", sm.find_role("Op"), "x" * 20)
"""


def test_fab_users_created_from_the_configuration_once(pg_server, tmp_path):
    pg_server.ensure_database("airflow_fab")
    state = tmp_path / "state"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__AUTH_MANAGER": FAB,
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_server.url("airflow_fab"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "DEMAT_STATE": str(state), "AIRFLOW__API_AUTH__JWT_SECRET": "secret-de-test-" + "x" * 60}
    airflow = str(Path(sys.executable).parent / "airflow")
    migrated = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    old = subprocess.run([sys.executable, "-c", OLD], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert old.returncode == 0, old.stderr[-3000:]
    code = CREATE.format(state=str(state), config=str(ROOT / "flows" / "config" / "demo.yaml"))
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    created = json.loads(first.stdout.strip().splitlines()[-1])
    assert {"admin", "operateur", "maire.saintsever", "president.chalosse", "dgs.chalosse",
            "agent.saintsever", "agent.chalosse", "demat-service"} <= set(created)
    assert "finances.chalosse" not in created  # an existing user given another role by hand is left alone
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == []  # idempotent

    listed = subprocess.run([airflow, "users", "list", "-o", "json"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    table = listed.stdout[listed.stdout.index("[{"):]  # after any log line
    roles = {u["username"]: u["roles"] for u in json.loads(table[:table.rindex("]") + 1])}
    assert roles["maire.saintsever"] == roles["dgs.chalosse"] == ["Demat"]  # dgs: moved from User
    assert roles["agent.chalosse"] == roles["agent.saintsever"] == ["Demat"]  # agent.saintsever: from Viewer
    assert roles["operateur"] == ["Op"] and roles["admin"] == ["Admin"] and roles["demat-service"] == ["Op"]
    assert roles["finances.chalosse"] == ["Op"]

    decided = subprocess.run([sys.executable, "-c", DECIDE], env=env, capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
    assert decided.returncode == 0, decided.stderr[-3000:]
    out = json.loads(decided.stdout.strip().splitlines()[-1])
    # Website: FAB adds it to every role (its own login and profile pages); nothing of a collectivité
    assert out["role"] == [["can_edit", "My Password"], ["can_edit", "My Profile"], ["can_read", "My Password"],
                           ["can_read", "My Profile"], ["can_read", "Plugins"], ["can_read", "Website"]]
    for name in ("agent.chalosse", "maire.saintsever"):  # no Dag, run, task, log, XCom, HITL... permission
        who = out[name]
        assert who["dag"] == [], (name, who["dag"])
        assert not any(who[k] for k in ("asset", "pool", "variable", "connection", "configuration", "hitl")), who
        # no Dags/Assets/Browse/Admin entries; views: the plugin list (navigation) and WEBSITE (used by no route)
        assert who["views"] == ["PLUGINS", "WEBSITE"] and who["menu"] == [], who
    op = out["operateur"]  # the check can fail: operators keep what FAB's Op role gives
    assert "GET RUN" in op["dag"] and "PUT HITL_DETAIL" in op["dag"] and "GET TASK_LOGS" in op["dag"]
    assert {"Dags", "Assets", "XComs"} <= set(op["menu"])
    # the service identity answers Airflow's HITL by user name (FAB's own check compares numeric ids)
    assert out["demat-service"]["hitl"] and "PUT HITL_DETAIL" in out["demat-service"]["dag"]
    assert not op["hitl"]
    minted = out["minted"]  # Airflow records {id: the service identity, name: the official}
    assert minted["id"] == minted["service_id"] and minted["name"] == "maire.saintsever", minted
    assert minted["hitl"] and minted["put_hitl"] and "demat_pour" in minted["claims"]
    assert out["forged_name"] == "agent.chalosse"
    secrets = state / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    passwords = json.loads(secrets.read_text())["passwords"]
    for out in (first.stdout + first.stderr, listed.stdout + listed.stderr):
        assert not any(pw in out for pw in passwords.values())
