"""The agents' answers to the préfecture's letters, sent every minute; annulations on request."""

from demat_airflow.actes_dags import build_annulation_dag, build_answers_dag

dag = build_answers_dag()
annulation_dag = build_annulation_dag()
