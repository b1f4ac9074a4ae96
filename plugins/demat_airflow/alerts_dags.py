"""DAG factory of the e-mail alerts: record new alerts, then send the digests that are due.

Kept apart from dags.py. Task bodies import the domain lazily (parsing stays cheap).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, task

from demat_airflow.dags import SERVICE_PRIORITY, TAGS


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

        @task(multiple_outputs=False, **SERVICE_PRIORITY)  # one XCom, not one per key
        def record_and_send() -> dict:
            """Record the new facts, then send the digests that are due, in one task process.

            Two tasks every minute cost two process starts on a 2-core machine. Pending mail goes
            out even if a scan failed; a failed digest keeps its place and its backoff and is
            retried by the next run, not by Airflow. A crash between the server's acceptance and
            the recorded mark resends one digest at worst. The task fails (visibly) when either
            part failed.
            """
            import logging

            from airflow.sdk.exceptions import AirflowException

            from demat_airflow.context import settings
            from demat_airflow.mailer import AirflowSmtpMailer, smtp_configured, smtp_conn_id
            from demat_airflow.operators import operator_users
            from flows.alerts.record import record_all
            from flows.alerts.send import send_due

            log = logging.getLogger(__name__)
            s = settings()
            problems: list[str] = []
            try:
                recorded = record_all(s, operators=operator_users())
            except Exception as exc:  # noqa: BLE001 - the sending below must still happen
                log.exception("Relevé des alertes en échec")
                recorded, problems = {}, [f"relevé des alertes : {type(exc).__name__}: {exc}"]
            if not smtp_configured():
                log.warning("Aucune connexion SMTP « %s » : les alertes restent en attente jusqu'à sa création.",
                            smtp_conn_id())
                sent: dict = {"sent": [], "failed": {}, "smtp": "absent"}
            else:
                report = send_due(s, AirflowSmtpMailer(sender=s.config.alerts.sender))
                sent = report.as_dict()
                if report.failed:
                    problems.append(f"{len(report.failed)} message(s) non envoyé(s), réessayé(s) au prochain "
                                    "passage : " + "; ".join(report.failed.values()))
            if problems:
                raise AirflowException(" ; ".join(problems))
            return {"releve": recorded, "envoi": sent}

        record_and_send()
    return dag
