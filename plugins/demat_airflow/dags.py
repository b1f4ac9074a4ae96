"""DAG factories: the DAG files in dags/ only call these, so they stay thin and cheap to parse.

Task bodies import the domain (flows/) lazily: parsing a DAG never loads lxml, pandas or GX.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

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
INGEST_CONCURRENT_RUNS = 4
DOSSIER_ACTIVE_RUNS = 100_000
# The scheduler queues the highest priority first. The tasks that keep documents moving (the inbox
# sweep, the collection of the State's and the SAE's answers, agents' answers and alerts) must not
# wait behind a batch of hundreds of validations: seen with 500 dossiers dropped at once, no
# collection ran until every validation had, so nothing reached "archivé" for minutes.
SERVICE_PRIORITY = dict(priority_weight=1000, weight_rule="absolute")
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
        # a drop must not wait for the previous drop's run to finish: sweeps overlap safely (they
        # take turns on a database lock, see flows.pipeline.ingest.sweep)
        max_active_runs=INGEST_CONCURRENT_RUNS,
        tags=TAGS,
        doc_md="Réveillé par l'observateur des dossiers d'entrée, et toutes les 5 minutes par sécurité.",
    ) as dag:

        @task(**SERVICE_PRIORITY, **TRANSIENT_RETRIES)
        def sweep() -> dict[str, list[str]]:
            """Record a dossier per claimed file and start its run (idempotent: a retry finds both)."""
            from demat_airflow.context import settings, start_run
            from flows.pipeline.ingest import sweep as sweep_inbox

            out: dict[str, list[str]] = {"started": [], "already_running": []}
            for s in sweep_inbox(settings()):
                created = start_run(s.dag_id, s.run_id, {"dossier_id": s.dossier_id})
                out["started" if created else "already_running"].append(s.run_id)
            return out

        sweep()
    return dag


def build_dossier_dag(flow: str) -> DAG:
    from airflow.providers.standard.operators.empty import EmptyOperator

    from demat_airflow.operators import ParapheurOperator
    from demat_airflow.task_ids import AUTOMATIC_TASK, SIGN_TASK, step_task_id
    from flows.config.models import MAX_CIRCUIT_STEPS

    dag_id = {"actes": "demat_acte", "helios": "demat_pes"}[flow]
    title = {"actes": "Acte vers le contrôle de légalité", "helios": "Flux PES V2 vers Hélios"}[flow]
    with DAG(
        dag_id=dag_id,
        description=f"Un run par dossier : {title} (validation, parapheur, signature, transmission)",
        schedule=None,
        catchup=False,
        # a dossier waiting at the parapheur (weeks, for some) keeps its run active without holding a
        # worker slot: a low cap would stop newer dossiers from even being validated (seen with 64:
        # the 129th dossier of a batch stayed "Reçu" until someone signed). Task concurrency is
        # bounded by the executor's parallelism, not here.
        max_active_runs=DOSSIER_ACTIVE_RUNS,
        # a dossier further along goes first (its weight adds its upstream tasks'): a batch finishes
        # dossiers as it goes rather than validating everything before signing anything
        default_args={"weight_rule": "upstream"},
        params={"dossier_id": Param("", type="string", title="Identifiant du dossier")},
        tags=TAGS,
    ) as dag:

        def sign_then_transmit(dossier_id: str) -> str:
            """Sign with the circuit's official, then upload to the State (both idempotent)."""
            from airflow.sdk.exceptions import AirflowSkipException

            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline import steps

            outcome = steps.sign(settings(), dossier_id)
            if not outcome.proceed:
                raise AirflowSkipException(f"Dossier {dossier_id} : {outcome.state} {outcome.message}".strip())
            upload_dir, _ = remote_dirs("prefecture" if flow == "actes" else "dgfip")
            return steps.transmit(settings(), dossier_id, endpoint, upload_dir).state

        @task.branch(**TRANSIENT_RETRIES)
        def validate(params=None) -> str:
            """Validate, then go to the parapheur; when nobody has to answer, sign and transmit here.

            Validation, signature and transmission always run together on a circuit without a
            human step: one task process instead of two (each start costs Airflow about 0.5
            CPU-s). Every step is idempotent, so a retry after a crash resumes where it stopped.
            """
            from airflow.sdk.exceptions import AirflowSkipException

            from demat_airflow.context import settings
            from flows.pipeline import steps

            outcome = steps.validate(settings(), params["dossier_id"])
            if not outcome.proceed:
                raise AirflowSkipException(f"Dossier {outcome.dossier_id} : {outcome.state}")
            if steps.has_parapheur(settings(), outcome.dossier_id):
                return step_task_id(1)
            sign_then_transmit(outcome.dossier_id)
            return AUTOMATIC_TASK

        parapheur = [ParapheurOperator(task_id=step_task_id(i), step=i, retries=2, retry_delay=timedelta(seconds=5))
                     for i in range(1, MAX_CIRCUIT_STEPS + 1)]
        # the automatic circuit's end, shown in the grid: the scheduler marks it done without a process
        automatic = EmptyOperator(task_id=AUTOMATIC_TASK, task_display_name="Signé et transmis sans intervention")

        @task(task_id=SIGN_TASK, trigger_rule="none_failed_min_one_success", **TRANSIENT_RETRIES)
        def sign_and_transmit(params=None) -> str:
            """After the parapheur's last approval."""
            return sign_then_transmit(params["dossier_id"])

        # each step may be the circuit's last, so the signature follows every step
        validated = validate()
        chain(validated, *parapheur)
        validated >> automatic
        sign = sign_and_transmit()
        for step in parapheur:
            step >> sign
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

        @task(**SERVICE_PRIORITY, **TRANSIENT_RETRIES)
        def collect_and_deposit() -> dict:
            """Acknowledgments, then SAE deposits, then SAE replies, in one task process.

            Three tasks every 20 s cost three process starts whether or not anything waited. Each
            part is idempotent; one counterpart failing does not stop the others, and the task
            fails afterwards (so it retries with backoff and operators see which part failed).
            """
            from demat_airflow.context import endpoint, remote_dirs, settings
            from flows.pipeline.collect import collect
            from flows.pipeline.deposit import deposit_ready

            out: dict = {}
            failures: dict[str, str] = {}

            def part(name: str, fn) -> None:
                try:
                    out[name] = fn()
                except Exception as exc:  # noqa: BLE001 - reported below, the task fails and retries
                    failures[name] = f"{type(exc).__name__}: {exc}"

            def collect_from(counterpart: str) -> dict:
                r = collect(settings(), counterpart, endpoint, remote_dirs(counterpart)[1])
                return {"seen": r.seen, "processed": r.processed, "unmatched": r.unmatched}

            part("prefecture", lambda: collect_from("prefecture"))
            part("dgfip", lambda: collect_from("dgfip"))
            part("sae_depots", lambda: deposit_ready(settings(), endpoint, remote_dirs("sae")[0], timing="immediate"))
            part("sae", lambda: collect_from("sae"))
            if failures:
                raise RuntimeError("Relève incomplète, nouvel essai programmé : " + " ; ".join(
                    f"{k} : {v}" for k, v in failures.items()))
            return out

        collect_and_deposit()
    return dag


def build_watch_dag() -> DAG:
    with DAG(
        dag_id="demat_watch",
        description="Alerte sur les dossiers sans réponse de l'État ou du SAE ; horodate le journal (RFC 3161)",
        schedule=timedelta(minutes=10),
        catchup=False,
        max_active_runs=1,
        tags=TAGS,
    ) as dag:

        @task(retries=2, retry_delay=timedelta(seconds=30), **SERVICE_PRIORITY)
        def alert_silences() -> list[str]:
            from demat_airflow.context import settings
            from flows.pipeline.watch import alert_stuck

            return [s.message() for s in alert_stuck(settings())]

        @task(retries=2, retry_delay=timedelta(minutes=1))
        def timestamp_journal() -> dict:
            """RFC 3161 proof of the journal's new entries (a TSA outage only delays it)."""
            from demat_airflow.context import settings
            from flows.dossier.timestamp import stamp_journal

            s = settings()
            r = stamp_journal(s.database_url, s.state_dir)
            return {"horodatees": r.stamped, "en_attente": r.waiting, "motif": r.reason}

        alert_silences()
        timestamp_journal()
    return dag


def build_nightly_dag() -> DAG:
    with DAG(
        dag_id="demat_nightly",
        description="Lot de nuit : dépôts SAE différés, rapport tiers du jour, rapport des dossiers bloqués, purge de l'historique Airflow",
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

        @task(retries=1, retry_delay=timedelta(minutes=10))
        def purge_history() -> dict:
            """Retention of Airflow's history (demat_airflow.retention): keeps the scheduler fast."""
            from demat_airflow.context import airflow_database_url, settings
            from demat_airflow.retention import run_retention
            from flows.pipeline.retention import disposable_runs

            s = settings()
            keep = s.config.retention
            return run_retention(airflow_database_url(), lambda ids: disposable_runs(s, ids),
                                 dossier_days=keep.dossier_runs_days, periodic_days=keep.periodic_runs_days)

        @task(retries=1)
        def refresh_crls() -> dict:
            """The trust configuration's CRLs (`signature.crl_urls`) downloaded again (docs/signature.md)."""
            from demat_airflow.context import settings
            from flows.pipeline.signing import refresh_crls as refresh

            return refresh(settings())

        @task(retries=1)
        def purge_documents() -> dict:
            """Documents of dossiers archived N days ago leave demat's store (flows.pipeline.documents_retention)."""
            from demat_airflow.context import settings
            from flows.pipeline.nightly import documents_retention

            return documents_retention(settings())

        [deposit_nightly(), tiers_report(), stuck_report(), purge_history(), refresh_crls(), purge_documents()]
    return dag
