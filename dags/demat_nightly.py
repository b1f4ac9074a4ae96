"""The nightly batch: deferred archive deposits, the day's tiers report, the stuck-dossier report."""

from demat_airflow.dags import build_nightly_dag

dag = build_nightly_dag()
