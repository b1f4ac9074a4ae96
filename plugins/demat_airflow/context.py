"""What a demat task needs from Airflow: settings, and SFTP endpoints built from Connections."""

from __future__ import annotations

import json
from functools import lru_cache

from flows.settings import Settings

COUNTERPART_CONNECTIONS = {"prefecture": "demat_prefecture", "dgfip": "demat_dgfip", "sae": "demat_sae"}


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


def endpoint(counterpart: str):
    """An SftpEndpoint for a counterpart, from its Airflow Connection (host key pinned in `extra`)."""
    from airflow.sdk import BaseHook

    from flows.transport.sftp import SftpEndpoint

    conn = BaseHook.get_connection(COUNTERPART_CONNECTIONS[counterpart])
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else json.loads(conn.extra or "{}")
    if not extra.get("host_key"):
        raise RuntimeError(
            f"La connexion {conn.conn_id} n'a pas de clé d'hôte épinglée (extra.host_key) : connexion refusée."
        )
    return SftpEndpoint(
        host=conn.host,
        port=int(conn.port or 22),
        username=conn.login,
        key_path=extra["key_file"],
        host_key=extra["host_key"],
    )


def remote_dirs(counterpart: str) -> tuple[str, str]:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(COUNTERPART_CONNECTIONS[counterpart])
    extra = conn.extra_dejson or {}
    return extra.get("upload_dir", "depot"), extra.get("reply_dir", "retour")
