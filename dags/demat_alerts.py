"""Every minute: record new alerts, send each recipient's digest (at most one an hour) by e-mail."""

from demat_airflow.alerts_dags import build_alerts_dag

dag = build_alerts_dag()
