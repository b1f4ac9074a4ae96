"""The state folder is owner-only (issue 14, part 6), and the launcher selects demat's auth manager."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from embedded.platform import NAV_THEME, SERVICE_USER, Layout, airflow_env, platform_users, secure_state

ROOT = Path(__file__).resolve().parents[3]


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_existing_world_readable_state_is_made_owner_only(tmp_path):
    state = tmp_path / "state"
    (state / "store" / "ab").mkdir(parents=True)
    (state / "inbox" / "saint-sever" / "helios").mkdir(parents=True)
    iban = state / "store" / "ab" / "abcdef"
    iban.write_text("FR7630001007941234567890185")
    script = state / "outil.sh"
    script.write_text("#!/bin/sh\n")
    for p in (state, state / "store", state / "store" / "ab", state / "inbox", state / "inbox" / "saint-sever",
              state / "inbox" / "saint-sever" / "helios"):
        p.chmod(0o755)
    iban.chmod(0o644)
    script.chmod(0o775)
    # hostile: a link inside the state to a file outside must be neither changed nor followed
    outside = tmp_path / "ailleurs.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    tmp_path.chmod(0o755)
    (state / "lien").symlink_to(outside)
    (state / "lien-dossier").symlink_to(tmp_path, target_is_directory=True)

    changed = secure_state(state)

    assert changed == 8  # six folders, two files
    for folder, dirs, files in os.walk(state):
        for name in (*dirs, *files):
            p = Path(folder) / name
            if not p.is_symlink():
                assert mode(p) & 0o077 == 0, (p, oct(mode(p)))
    assert mode(state) == 0o700 and mode(iban) == 0o600
    assert mode(script) == 0o700  # the owner's bits are kept
    assert mode(outside) == 0o644 and mode(tmp_path) == 0o755  # outside: untouched
    assert secure_state(state) == 0  # idempotent


def test_a_new_state_is_created_owner_only(tmp_path):
    state = tmp_path / "neuf"
    old = os.umask(0o022)
    try:
        secure_state(state)
    finally:
        os.umask(old)
    assert mode(state) == 0o700


class _Pg:
    def url(self, database="postgres", driver="postgresql+psycopg2"):
        return f"{driver}://u:p@127.0.0.1:1/{database}"


def _layout(tmp_path: Path, config: str | None = None) -> Layout:
    layout = Layout(tmp_path)
    src = (ROOT / "flows" / "config" / "demo.yaml").read_text(encoding="utf-8")
    layout.config.write_text(config or src, encoding="utf-8")
    return layout


def test_airflow_env_selects_demat_auth_manager_and_private_logs(tmp_path):
    layout = _layout(tmp_path)
    env = airflow_env(layout, _Pg(), {"fernet_key": "k", "jwt_secret": "j", "api_secret": "a"}, 8080, {})
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "demat_airflow.auth_manager.DematAuthManager"
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS"] == "0o600"
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS"] == "0o700"
    assert env["DEMAT_SERVICE_USER"] == SERVICE_USER
    users = dict(u.split(":") for u in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert SERVICE_USER not in users  # no password, no login: its tokens are minted server-side
    assert users["agent.chalosse"] == "viewer" and users["operateur"] == "op"
    assert "nav-dags-link" in next(iter(NAV_THEME["globalCss"]))


def test_a_login_named_like_the_service_identity_is_refused(tmp_path):
    src = (ROOT / "flows" / "config" / "demo.yaml").read_text(encoding="utf-8")
    assert "agents: [agent.chalosse]" in src
    layout = _layout(tmp_path, src.replace("agents: [agent.chalosse]", f"agents: [{SERVICE_USER}]"))
    with pytest.raises(ValueError, match="réservé à l'identité de service"):
        platform_users(layout)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a folder's group needs root (the embedded server's case)")
def test_private_folders_open_to_the_database_server_group_only(tmp_path):
    from embedded.postgres import _allow_traverse

    gid = 65534  # nogroup: stands for the server's system group
    tmp_path.chmod(0o755)
    state = tmp_path / "state"
    (state / "postgres").mkdir(parents=True)
    state.chmod(0o700)
    (state / "postgres").chmod(0o700)
    _allow_traverse(state / "postgres", gid)
    for p in (state, state / "postgres"):
        assert mode(p) == 0o710 and p.stat().st_gid == gid, (p, oct(mode(p)))  # never readable by others
    assert mode(tmp_path) == 0o755  # already traversable: unchanged
