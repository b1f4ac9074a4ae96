"""demat domain package: pure Python, never imports Airflow."""
