"""Inbox → dossiers: woken by the inbox watcher, swept every 5 minutes as a safety net."""

from demat_airflow.dags import build_ingest_dag

dag = build_ingest_dag()
