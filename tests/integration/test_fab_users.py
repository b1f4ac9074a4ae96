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


def test_fab_users_created_from_the_configuration_once(pg_server, tmp_path):
    pg_server.ensure_database("airflow_fab")
    state = tmp_path / "state"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__AUTH_MANAGER": FAB,
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_server.url("airflow_fab"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "DEMAT_STATE": str(state)}
    airflow = str(Path(sys.executable).parent / "airflow")
    migrated = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    code = CREATE.format(state=str(state), config=str(ROOT / "flows" / "config" / "demo.yaml"))
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    created = json.loads(first.stdout.strip().splitlines()[-1])
    assert {"admin", "operateur", "maire.saintsever", "president.chalosse", "dgs.chalosse", "finances.chalosse",
            "agent.saintsever", "agent.chalosse"} <= set(created)
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == []  # idempotent

    listed = subprocess.run([airflow, "users", "list", "-o", "json"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    table = listed.stdout[listed.stdout.index("[{"):]  # after any log line
    roles = {u["username"]: u["roles"] for u in json.loads(table[:table.rindex("]") + 1])}
    assert roles["maire.saintsever"] == roles["dgs.chalosse"] == ["User"]
    assert roles["agent.chalosse"] == ["Viewer"] and roles["operateur"] == ["Op"] and roles["admin"] == ["Admin"]
    secrets = state / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    passwords = json.loads(secrets.read_text())["passwords"]
    for out in (first.stdout + first.stderr, listed.stdout + listed.stderr):
        assert not any(pw in out for pw in passwords.values())
