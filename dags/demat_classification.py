"""Nightly (and on demand) DemandeClassification (7-1) for every collectivité."""

from demat_airflow.actes_dags import build_classification_dag

dag = build_classification_dag()
