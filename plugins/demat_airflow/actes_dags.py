"""DAG factories of the @ctes follow-up: the agent's answers, annulations, the classification.

Kept apart from dags.py (the dossier pipeline). Task bodies import the domain lazily.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, CronTriggerTimetable, Param, task

from demat_airflow.dags import SERVICE_PRIORITY, TAGS, TRANSIENT_RETRIES


def build_answers_dag() -> DAG:
    with DAG(
        dag_id="demat_actes_answers",
        description="Transmet à la préfecture les réponses déposées par les agents (2-2, 3-2 à 3-4, 4-2 à 4-4)",
        schedule=timedelta(seconds=int(os.environ.get("DEMAT_ANSWERS_SECONDS", "60"))),
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, "actes"],
        doc_md=(
            "Chaque minute (ou à la demande), parcourt `<inbox>/<collectivité>/actes/reponses/<IDActe>/` : "
            "construit la réponse @ctes, la vérifie, l'enregistre puis la dépose chez la préfecture, et range le "
            "dossier de réponse dans `reponses/traites/`. Format : docs/actes-reponses.md."
        ),
    ) as dag:

        @task(**SERVICE_PRIORITY, **TRANSIENT_RETRIES)
        def send_answers() -> dict:
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.answers import process_replies

            upload_dir, _ = remote_dirs("prefecture")
            r = process_replies(settings(), endpoint, upload_dir)
            return {"sent": r.sent, "refused": r.refused, "resumed": r.resumed}

        send_answers()
    return dag


def build_annulation_dag() -> DAG:
    with DAG(
        dag_id="demat_actes_annulation",
        description="Annule la transmission d'un acte (message 6-1), à la demande d'un agent",
        schedule=None,
        catchup=False,
        max_active_runs=16,
        params={
            "dossier_id": Param("", type="string", minLength=1, title="Identifiant du dossier"),
            "motif": Param("", type="string", minLength=1, title="Motif de l'annulation"),
        },
        tags=[*TAGS, "actes"],
    ) as dag:

        @task(**SERVICE_PRIORITY, **TRANSIENT_RETRIES)
        def request_annulation(params=None, dag_run=None) -> str:
            """The same checks as the dossier page's action (state, role, motif), then the upload.

            Only operators reach Airflow's DAGs, so the trigger acts with the operator's role; a refusal
            (no motif, acte not transmitted, already final) fails the run at once, without retries."""
            from airflow.sdk.exceptions import AirflowFailException

            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline import actions
            from flows.pipeline.answers import request_annulation as send

            actor = getattr(dag_run, "triggering_user_name", None) or "opérateur"
            try:
                actions.request_annulation(settings(), params["dossier_id"], actor=actor,
                                           roles=frozenset({actions.OPERATOR}), motif=params["motif"])
            except actions.ActionRefused as exc:
                raise AirflowFailException(f"{exc.message} {exc.fix}") from exc
            upload_dir, _ = remote_dirs("prefecture")
            return send(settings(), params["dossier_id"], actor, params["motif"], endpoint_factory=endpoint,
                        upload_dir=upload_dir)

        request_annulation()
    return dag


def build_classification_dag() -> DAG:
    with DAG(
        dag_id="demat_classification",
        description="Demande chaque nuit la classification des actes (7-1) pour chaque collectivité",
        schedule=CronTriggerTimetable(os.environ.get("DEMAT_CLASSIFICATION_CRON", "30 2 * * *"),
                                      timezone="Europe/Paris"),
        catchup=False,
        max_active_runs=1,
        params={
            "collectivite": Param("", type="string", title="Collectivité (vide : toutes)"),
            "forcer": Param(False, type="boolean", title="Redemander même si déjà demandée aujourd'hui"),
        },
        tags=[*TAGS, "actes"],
        doc_md="La réponse (7-2 ou 7-3) revient par la relève `demat_collect` et sert ensuite à la validation.",
    ) as dag:

        @task(**TRANSIENT_RETRIES)
        def request_classification(params=None) -> list[dict]:
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.classification import request_all

            upload_dir, _ = remote_dirs("prefecture")
            out = request_all(settings(), endpoint, upload_dir, only=(params or {}).get("collectivite") or "",
                              force=bool((params or {}).get("forcer")))
            return [{"collectivite": o.collectivite, "name": o.name, "sent": o.sent, "message": o.message} for o in out]

        request_classification()
    return dag
