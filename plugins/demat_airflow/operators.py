"""The parapheur steps: Airflow human-in-the-loop operators whose respondents come from the circuit.

A dossier DAG serves every collectivité, and circuits differ (a signature alone, or visas then a
signature), so the DAG carries MAX_CIRCUIT_STEPS parapheur tasks in a row and each one asks the
domain at run time who must answer its step. Each task branches: to the next step, to the
signature once the circuit's last step is approved, or nowhere after a rejection. Steps a
circuit does not have are skipped by the scheduler without starting a process. On Airflow 3.3
a waiting step is parked in AWAITING_INPUT: it holds no worker slot.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from demat_airflow.task_ids import SIGN_TASK, step_task_id

APPROVE = "Approuver"
REJECT = "Rejeter"


def operator_users() -> list[str]:
    """Platform operators may answer any parapheur step (comma-separated Airflow user names)."""
    return [u for u in os.environ.get("DEMAT_OPERATORS", "admin,operateur").split(",") if u]


def extra_respondents() -> list[str]:
    """Besides the step's officials: the operators, and demat's service identity, which answers for
    the official demat checked (ui/hitl.py; officials may not call Airflow's HITL API themselves).
    Its name is demat_airflow.auth_manager.service_user(), not imported here: task processes stay light."""
    service = os.environ.get("DEMAT_SERVICE_USER", "").strip() or "demat-service"
    return [*operator_users(), service]


class ParapheurOperator(HITLOperator, BranchMixIn):
    """Step `step` of the dossier's circuit (1-based): ask, wait, record, branch."""

    ui_color = "#f4e1c1"
    inherits_from_skipmixin = True

    def __init__(self, *, step: int, **kwargs) -> None:
        kwargs.setdefault("subject", "Parapheur")
        # The DAG's params (dossier_id) reach the task through the context; the form only asks for
        # the reason, and Airflow checks the answer's params against the form's exactly.
        kwargs.pop("params", None)
        params = {"motif": Param("", type="string", title="Motif (obligatoire en cas de rejet)")}
        super().__init__(options=[APPROVE, REJECT], params=params, **kwargs)
        self.step = step

    def execute(self, context):
        from demat_airflow.context import settings
        from flows.pipeline import steps

        dossier_id = context["params"]["dossier_id"]
        request = steps.parapheur_request(settings(), dossier_id, step=self.step, operators=extra_respondents())
        if request.action != "ask":  # no such step, already decided (a retry), or the dossier left
            return self._follow(context, request)
        self.subject = request.subject
        self.body = request.body
        self.assigned_users = request.assigned_users
        self.response_timeout = timedelta(days=request.deadline_days)
        return super().execute(context)

    def execute_complete(self, context, event):
        from demat_airflow.context import settings
        from flows.pipeline import steps

        dossier_id = context["params"]["dossier_id"]
        if isinstance(event, dict) and event.get("error_type") == "timeout":
            from airflow.sdk.exceptions import AirflowFailException

            days = int(self.response_timeout.days) if self.response_timeout else 30
            steps.parapheur_expired(settings(), dossier_id, deadline_days=days, step=self.step)
            raise AirflowFailException(f"Délai du parapheur dépassé pour le dossier {dossier_id} (étape {self.step})")
        answer = super().execute_complete(context, event)
        outcome = steps.record_decision(settings(), dossier_id, dict(answer), step=self.step)
        self._follow(context, outcome)
        return answer

    def _follow(self, context, outcome) -> str | None:
        """Branch: the next step, the signature after the last step, or nothing at all."""
        if not outcome.proceed:
            target = None
        elif outcome.last:
            target = SIGN_TASK
        else:
            target = step_task_id(self.step + 1)
        self.do_branch(context, target)
        return target
