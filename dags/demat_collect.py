"""Batch collection of acknowledgments, archive deposits and archive replies."""

from demat_airflow.dags import build_collect_dag

dag = build_collect_dag()
