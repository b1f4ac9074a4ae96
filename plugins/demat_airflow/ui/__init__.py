"""demat's pages and business API inside Airflow's API server (an Airflow 3 FastAPI plugin).

Mounted at /demat: the Parapheur (HITL answers in bulk), the Dossiers (search, timeline,
artefacts, dashboard) and the business REST API (/demat/api/v1). Identity and tokens are
Airflow's own: the UI's `_token` cookie or an `Authorization: Bearer` JWT from /auth/token.
"""
