"""One run per PES V2 file: validation and tiers gate, parapheur, XAdES signature, transmission to Hélios."""

from demat_airflow.dags import build_dossier_dag

dag = build_dossier_dag("helios")
