"""The parapheur step: an Airflow human-in-the-loop operator whose respondents come from the circuit.

The HITL operator's assigned users are fixed at parse time; a dossier DAG serves every
collectivité, so this operator asks the domain at run time who must answer and what to show.
On Airflow 3.3 the waiting task is parked in AWAITING_INPUT: it holds no worker slot.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException

APPROVE = "Approuver"
REJECT = "Rejeter"


def operator_users() -> list[str]:
    """Platform operators may answer any parapheur step (comma-separated Airflow user names)."""
    return [u for u in os.environ.get("DEMAT_OPERATORS", "admin,operateur").split(",") if u]


class ParapheurOperator(HITLOperator):
    ui_color = "#f4e1c1"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("subject", "Parapheur")
        # The DAG's params (dossier_id) reach the task through the context; the form only asks for
        # the reason, and Airflow checks the answer's params against the form's exactly.
        kwargs.pop("params", None)
        params = {"motif": Param("", type="string", title="Motif (obligatoire en cas de rejet)")}
        super().__init__(options=[APPROVE, REJECT], params=params, **kwargs)

    def execute(self, context):
        from demat_airflow.context import settings
        from flows.pipeline import steps

        dossier_id = context["params"]["dossier_id"]
        request = steps.parapheur_request(settings(), dossier_id, operators=operator_users())
        if not request.proceed:
            raise AirflowSkipException(f"Le dossier {dossier_id} n'attend pas de décision du parapheur.")
        self.subject = request.subject
        self.body = request.body
        self.assigned_users = request.assigned_users
        self.response_timeout = timedelta(days=request.deadline_days)
        return super().execute(context)

    def execute_complete(self, context, event):
        if isinstance(event, dict) and event.get("error_type") == "timeout":
            from airflow.sdk.exceptions import AirflowFailException

            from demat_airflow.context import settings
            from flows.pipeline import steps

            dossier_id = context["params"]["dossier_id"]
            days = int(self.response_timeout.days) if self.response_timeout else 30
            steps.parapheur_expired(settings(), dossier_id, deadline_days=days)
            raise AirflowFailException(f"Délai du parapheur dépassé pour le dossier {dossier_id}")
        return super().execute_complete(context, event)
