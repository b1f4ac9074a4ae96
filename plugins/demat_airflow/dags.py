"""DAG factories: the DAG files in dags/ only call these, so they stay thin and cheap to parse.

Task bodies import the domain (flows/) lazily: parsing a DAG never loads lxml, pandas or GX.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronTriggerTimetable,
    Param,
    chain,
    task,
)

from demat_airflow.triggers import InboxTrigger

TAGS = ["demat"]
TRANSIENT_RETRIES = dict(retries=6, retry_delay=timedelta(seconds=5), retry_exponential_backoff=2.0,
                         max_retry_delay=timedelta(minutes=10))


def _state_dir() -> Path:
    return Path(os.environ.get("DEMAT_STATE", Path(__file__).resolve().parents[2] / ".demat"))


def inbox_asset() -> Asset:
    state = _state_dir()
    inbox = Path(os.environ.get("DEMAT_INBOX", state / "inbox"))
    trigger = InboxTrigger(inbox_root=str(inbox), work_dir=str(state / "work"),
                           poll_interval=float(os.environ.get("DEMAT_INBOX_POLL", "1.0")),
                           min_age=float(os.environ.get("DEMAT_INBOX_MIN_AGE", "2.0")))
    return Asset("demat_inbox", uri=f"file://{inbox}", watchers=[AssetWatcher(name="demat_inbox_watcher", trigger=trigger)])


def build_ingest_dag() -> DAG:
    with DAG(
        dag_id="demat_ingest",
        description="Prend en charge les fichiers déposés dans les dossiers d'entrée et lance un run par dossier",
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
                                     assets=inbox_asset()),
        catchup=False,
        max_active_runs=1,
        tags=TAGS,
        doc_md="Réveillé par l'observateur des dossiers d'entrée, et toutes les 5 minutes par sécurité.",
    ) as dag:

        @task(**TRANSIENT_RETRIES)
        def sweep() -> list[dict]:
            from demat_airflow.context import settings
            from flows.pipeline.ingest import sweep as sweep_inbox

            return [
                {"trigger_dag_id": s.dag_id, "trigger_run_id": s.run_id, "conf": {"dossier_id": s.dossier_id}}
                for s in sweep_inbox(settings())
            ]

        TriggerDagRunOperator.partial(
            task_id="start_dossier", skip_when_already_exists=True, wait_for_completion=False,
            map_index_template="{{ task.trigger_run_id }}", **TRANSIENT_RETRIES,
        ).expand_kwargs(sweep())
    return dag


def build_dossier_dag(flow: str) -> DAG:
    from demat_airflow.operators import ParapheurOperator

    dag_id = {"actes": "demat_acte", "helios": "demat_pes"}[flow]
    title = {"actes": "Acte vers le contrôle de légalité", "helios": "Flux PES V2 vers Hélios"}[flow]
    with DAG(
        dag_id=dag_id,
        description=f"Un run par dossier : {title} (validation, parapheur, signature, transmission)",
        schedule=None,
        catchup=False,
        max_active_runs=64,
        params={"dossier_id": Param("", type="string", title="Identifiant du dossier")},
        tags=TAGS,
    ) as dag:

        @task(retries=2, retry_delay=timedelta(seconds=10))
        def validate(params=None) -> str:
            from airflow.sdk.exceptions import AirflowSkipException

            from demat_airflow.context import settings
            from flows.pipeline import steps

            outcome = steps.validate(settings(), params["dossier_id"])
            if not outcome.proceed:
                raise AirflowSkipException(f"Dossier {outcome.dossier_id} : {outcome.state}")
            return outcome.state

        parapheur = ParapheurOperator(task_id="parapheur", retries=2, retry_delay=timedelta(seconds=5))

        @task(**TRANSIENT_RETRIES)
        def sign_and_transmit(params=None, ti=None) -> str:
            from airflow.sdk.exceptions import AirflowSkipException

            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline import steps

            dossier_id = params["dossier_id"]
            decision = ti.xcom_pull(task_ids="parapheur") or {}
            outcome = steps.record_decision(settings(), dossier_id, decision)
            if not outcome.proceed:
                raise AirflowSkipException(f"Dossier {dossier_id} : {outcome.state}")
            responder = (decision.get("responded_by_user") or {}).get("name", "inconnu")
            steps.sign(settings(), dossier_id, actor=responder)
            counterpart = "prefecture" if flow == "actes" else "dgfip"
            upload_dir, _ = remote_dirs(counterpart)
            return steps.transmit(settings(), dossier_id, endpoint, upload_dir).state

        chain(validate(), parapheur, sign_and_transmit())
    return dag


def build_collect_dag() -> DAG:
    with DAG(
        dag_id="demat_collect",
        description="Relève les acquittements (ARActe, PES_ACQUIT), dépose au SAE et relève ses réponses",
        schedule=timedelta(seconds=int(os.environ.get("DEMAT_COLLECT_SECONDS", "20"))),
        catchup=False,
        max_active_runs=1,
        tags=TAGS,
    ) as dag:

        @task(**TRANSIENT_RETRIES)
        def collect_acknowledgments() -> dict:
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.collect import collect

            out = {}
            for counterpart in ("prefecture", "dgfip"):
                _, reply_dir = remote_dirs(counterpart)
                r = collect(settings(), counterpart, endpoint, reply_dir)
                out[counterpart] = {"seen": r.seen, "processed": r.processed, "unmatched": r.unmatched}
            return out

        @task(**TRANSIENT_RETRIES)
        def deposit_archives() -> list[str]:
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.deposit import deposit_ready

            upload_dir, _ = remote_dirs("sae")
            return deposit_ready(settings(), endpoint, upload_dir, timing="immediate")

        @task(**TRANSIENT_RETRIES)
        def collect_sae_replies() -> dict:
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.collect import collect

            _, reply_dir = remote_dirs("sae")
            r = collect(settings(), "sae", endpoint, reply_dir)
            return {"seen": r.seen, "processed": r.processed, "unmatched": r.unmatched}

        chain(collect_acknowledgments(), deposit_archives(), collect_sae_replies())
    return dag


def build_watch_dag() -> DAG:
    with DAG(
        dag_id="demat_watch",
        description="Alerte sur les dossiers sans réponse de l'État ou du SAE au-delà du seuil",
        schedule=timedelta(minutes=10),
        catchup=False,
        max_active_runs=1,
        tags=TAGS,
    ) as dag:

        @task(retries=2, retry_delay=timedelta(seconds=30))
        def alert_silences() -> list[str]:
            from demat_airflow.context import settings
            from flows.pipeline.watch import alert_stuck

            return [s.message() for s in alert_stuck(settings())]

        alert_silences()
    return dag


def build_nightly_dag() -> DAG:
    with DAG(
        dag_id="demat_nightly",
        description="Lot de nuit : dépôts SAE différés, rapport tiers du jour, rapport des dossiers bloqués",
        schedule=CronTriggerTimetable("0 2 * * *", timezone="Europe/Paris"),
        catchup=False,
        max_active_runs=1,
        tags=TAGS,
    ) as dag:

        @task(**TRANSIENT_RETRIES)
        def deposit_nightly() -> list[str]:
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.deposit import deposit_ready

            upload_dir, _ = remote_dirs("sae")
            return deposit_ready(settings(), endpoint, upload_dir, timing="nightly", limit=100000)

        @task(retries=1)
        def tiers_report(data_interval_start=None) -> dict:
            from datetime import UTC, datetime, timedelta

            from demat_airflow.context import settings
            from flows.pipeline.nightly import tiers_report as report

            day = (data_interval_start or datetime.now(UTC) - timedelta(days=1)).date()
            return report(settings(), day)

        @task(retries=1)
        def stuck_report() -> list[dict]:
            from demat_airflow.context import settings
            from flows.pipeline.nightly import stuck_report as report

            return report(settings())

        [deposit_nightly(), tiers_report(), stuck_report()]
    return dag
