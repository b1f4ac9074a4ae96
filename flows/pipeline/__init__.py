"""The steps of a dossier's life, as plain functions that Airflow tasks call (no Airflow here)."""
