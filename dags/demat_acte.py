"""One run per acte: validation, parapheur, transmission to the préfecture (@ctes)."""

from demat_airflow.dags import build_dossier_dag

dag = build_dossier_dag("actes")
