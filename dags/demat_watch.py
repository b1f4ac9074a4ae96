"""Every 10 minutes: alert on dossiers waiting on the State or the archive past their threshold."""

from demat_airflow.dags import build_watch_dag

dag = build_watch_dag()
