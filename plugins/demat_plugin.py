"""Registers demat's UI and business API with Airflow 3: one FastAPI app mounted at /demat, the
"Parapheur" and "Dossiers" entries in the Airflow navigation (shown inside the Airflow UI), and the
API server's guards (demat_airflow.ui.limits: body caps, login throttling, cookie flags)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

try:
    from demat_airflow.ui.app import create_app

    _app = create_app()
except Exception as exc:  # an unloadable UI must not stop the scheduler or the DAG processor
    import logging

    logging.getLogger(__name__).exception("Le plugin d'interface demat n'a pas pu être chargé : %s", exc)
    _app = None

try:  # streamed body caps, login throttling and the `_token` cookie's flags, for the whole API server
    from demat_airflow.ui.limits import root_middlewares

    _middlewares = root_middlewares()
except Exception as exc:
    import logging

    logging.getLogger(__name__).exception("Les protections demat du serveur d'API n'ont pas pu être chargées : %s", exc)
    _middlewares = []


class DematPlugin(AirflowPlugin):
    name = "demat"
    fastapi_apps = [{"app": _app, "url_prefix": "/demat", "name": "demat"}] if _app is not None else []
    fastapi_root_middlewares = _middlewares
    external_views = [
        {"name": "Parapheur", "href": "/demat/parapheur", "url_route": "parapheur", "destination": "nav",
         "nav_top_level": True, "icon": "/demat/static/parapheur.svg"},
        {"name": "Dossiers", "href": "/demat/dossiers", "url_route": "dossiers", "destination": "nav",
         "nav_top_level": True, "icon": "/demat/static/dossiers.svg"},
    ]
