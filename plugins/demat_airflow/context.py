"""What a demat task needs from Airflow: settings, and SFTP endpoints built from Connections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache

from flows.settings import Settings

COUNTERPART_CONNECTIONS = {"prefecture": "demat_prefecture", "dgfip": "demat_dgfip", "sae": "demat_sae"}


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


def airflow_database_url() -> str:
    """Airflow's metadata database, for the retention job (it deletes finished runs there).

    Airflow 3 task processes do not see the scheduler's URL: the supervisor replaces it with
    "airflow-db-not-allowed:///" so task code cannot touch the metadata database. The retention is
    the one task that must, so the deployment hands it DEMAT_AIRFLOW_DATABASE_URL.
    """
    import os

    url = os.environ.get("DEMAT_AIRFLOW_DATABASE_URL") or os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if not url:
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn", fallback="")
    if not url or url.startswith("airflow-db-not-allowed"):
        raise RuntimeError(
            "La rétention de l'historique d'Airflow n'a pas l'adresse de la base d'Airflow (les tâches d'Airflow 3 "
            "n'y ont pas accès) : définissez DEMAT_AIRFLOW_DATABASE_URL dans l'environnement des workers "
            "(deploy/demat.env), comme DEMAT_DATABASE_URL."
        )
    return url


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


def start_run(dag_id: str, run_id: str, conf: dict) -> bool:
    """Create a DAG run from inside a task, through the task's own Execution API channel.

    This is what TriggerDagRunOperator does under the hood, without one task process per run:
    the ingest sweep starts every new dossier's run itself. True if created, False if the run
    already exists (a retried sweep), any other refusal raises.
    """
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse, TriggerDagRun
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    now = datetime.now(UTC)  # as TriggerDagRunOperator: logical date and run-after are "now"
    answer = SUPERVISOR_COMMS.send(TriggerDagRun(dag_id=dag_id, run_id=run_id, conf=conf, logical_date=now,
                                                 run_after=now))
    if isinstance(answer, ErrorResponse):
        if answer.error == ErrorType.DAGRUN_ALREADY_EXISTS:
            return False
        raise RuntimeError(f"Airflow a refusé de créer le run {run_id} de {dag_id} : {answer.error} {answer.detail}")
    return True
