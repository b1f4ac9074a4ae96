"""DAG factory of the e-mail alerts: record new alerts, then send the digests that are due.

Kept apart from dags.py. Task bodies import the domain lazily (parsing stays cheap).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, chain, task

from demat_airflow.dags import TAGS


def build_alerts_dag() -> DAG:
    with DAG(
        dag_id="demat_alerts",
        description="Alertes par e-mail : refus, dossiers bloqués, échéances du parapheur, certificats",
        schedule=timedelta(seconds=int(os.environ.get("DEMAT_ALERTS_SECONDS", "60"))),
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, "alertes"],
        doc_md=(
            "Chaque minute : relève les nouveaux faits (refus du journal, dossiers bloqués, échéances proches du "
            "parapheur, certificats proches de l'expiration ; une alerte par fait), puis envoie à chaque "
            "destinataire un message récapitulatif, au plus un par heure (`alerts.digest_minutes`). Un message "
            "n'est marqué envoyé qu'après acceptation par le serveur SMTP (connexion `demat_smtp`)."
        ),
    ) as dag:

        @task(retries=2, retry_delay=timedelta(seconds=20), multiple_outputs=False)  # one XCom, not one per key
        def record_alerts() -> dict:
            from demat_airflow.context import settings
            from demat_airflow.operators import operator_users
            from flows.alerts.record import record_all

            return record_all(settings(), operators=operator_users())

        @task(trigger_rule="all_done", multiple_outputs=False)  # pending mail goes out even if a scan failed
        def send_digests() -> dict:
            """Retried by the next run, not by Airflow: a failed digest keeps its place and its backoff.

            A crash between the server's acceptance and the recorded mark resends one digest at worst.
            """
            import logging

            from airflow.sdk.exceptions import AirflowException

            from demat_airflow.context import settings
            from demat_airflow.mailer import AirflowSmtpMailer, smtp_configured, smtp_conn_id
            from flows.alerts.send import send_due

            if not smtp_configured():
                logging.getLogger(__name__).warning(
                    "Aucune connexion SMTP « %s » : les alertes restent en attente jusqu'à sa création.",
                    smtp_conn_id())
                return {"sent": [], "failed": {}, "smtp": "absent"}
            s = settings()
            report = send_due(s, AirflowSmtpMailer(sender=s.config.alerts.sender))
            if report.failed:
                raise AirflowException(
                    f"{len(report.failed)} message(s) d'alertes non envoyé(s), réessayé(s) au prochain passage : "
                    + "; ".join(report.failed.values()))
            return report.as_dict()

        chain(record_alerts(), send_digests())
    return dag
