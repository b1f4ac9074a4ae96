"""The dossier actions for a logged-in caller: shared by the pages (app.py) and the business API (api.py).

flows.pipeline.actions decides and records; this module adds who the caller is (roles on the
dossier's collectivité), what Airflow says about the dossier's run, and the Airflow side of each
action (relaunch a run, send an answer now). Both front ends map ActionRefused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from starlette.types import ASGIApp, Receive, Scope, Send

from demat_airflow.ui.security import Caller, operator_users

if TYPE_CHECKING:
    from flows.pipeline import actions

# the largest upload (flows.pipeline.actions.MAX_RESUBMIT_BYTES), plus the multipart envelope; the domain
# is imported lazily so that loading the plugin (scheduler, DAG processor) stays cheap
MAX_BODY = 512 * 1024 * 1024 + 1024 * 1024


class AirflowDown(RuntimeError):
    """Airflow's API did not answer or refused: French message for the caller (HTTP 503)."""


def _settings():
    from demat_airflow.context import settings

    return settings()


def roles(caller: Caller, dossier) -> frozenset[str]:
    from flows.pipeline import actions

    return actions.roles_for(_settings().config, caller.id, dossier.collectivite, operators=operator_users(),
                             airflow_role=caller.role)


def _run_ids(dossier) -> tuple[str, str]:
    from flows.pipeline.ingest import dag_id_for, run_id_for

    return dag_id_for(dossier.flow), dossier.run_id or run_id_for(dossier.id)


def run_state(caller: Caller, dossier, caller_roles: frozenset[str], *, strict: bool = False) -> str | None:
    """The run's state, asked only when it can matter (an operator, a dossier in a run step)."""
    from demat_airflow.ui import hitl, runs
    from flows.pipeline import actions

    if actions.OPERATOR not in caller_roles or dossier.state not in actions.RUN_STEPS:
        return None
    try:
        return runs.run_state(caller.token, *_run_ids(dossier))
    except (hitl.AirflowApiError, OSError) as exc:
        if strict:
            raise AirflowDown(f"Impossible de lire l'état du run dans Airflow : {exc}") from exc
        return None


@dataclass
class PageActions:
    offers: list[actions.Offer]
    facts: actions.Facts
    roles: frozenset[str]


def for_page(session, caller: Caller, dossier) -> PageActions:
    from flows.pipeline import actions

    r = roles(caller, dossier)
    f = actions.facts(session, dossier, run_state=run_state(caller, dossier, r))
    return PageActions(actions.offers(f, r), f, r)


def precheck(session, caller: Caller, dossier, action: str) -> frozenset[str]:
    """Refuse early (before reading a large upload) what the caller may not do now; returns the roles."""
    from flows.pipeline import actions

    r = roles(caller, dossier)
    problem = actions.refusal(actions.facts(session, dossier), action, r)
    if problem is not None and (problem.kind == "role" or action == actions.RESUBMIT and
                                dossier.state not in actions.RESUBMITTABLE):
        raise problem
    return r


def resubmit(caller: Caller, dossier_id: str, collectivite: str, flow: str, filename: str, stream: BinaryIO,
             caller_roles: frozenset[str]) -> actions.Done:
    from flows.pipeline import actions

    settings = _settings()
    staged = actions.stage_upload(settings, collectivite, flow, filename, stream)
    return actions.resubmit(settings, dossier_id, staged, actor=caller.name, roles=caller_roles)


def annul(caller: Caller, dossier_id: str, motif: str, caller_roles: frozenset[str]) -> actions.Done:
    from demat_airflow.ui import runs
    from flows.pipeline import actions

    done = actions.request_annulation(_settings(), dossier_id, actor=caller.name, roles=caller_roles, motif=motif)
    if done.created:
        runs.send_now(caller.name)
    return done


def answer(caller: Caller, dossier_id: str, files: list[tuple[str, BinaryIO]], caller_roles: frozenset[str], *,
           reponse: str, motif: str, date_courrier: str) -> actions.Done:
    from demat_airflow.ui import runs
    from flows.pipeline import actions

    documents = actions.read_documents(files)
    done = actions.answer_prefecture(_settings(), dossier_id, actor=caller.name, roles=caller_roles,
                                     documents=documents, reponse=reponse, motif=motif, date_courrier=date_courrier)
    if done.created:
        runs.send_now(caller.name)
    return done


def retry(caller: Caller, dossier, caller_roles: frozenset[str]) -> actions.Done:
    """Domain first (back to the step, journalled), then Airflow; a failure of the latter says where it stands."""
    from demat_airflow.ui import hitl, runs
    from flows.dossier import states
    from flows.pipeline import actions

    state = run_state(caller, dossier, caller_roles, strict=True)
    done = actions.retry(_settings(), dossier.id, actor=caller.name, roles=caller_roles, run_state=state)
    dag_id, run_id = _run_ids(dossier)
    try:
        what = runs.relaunch(caller.token, dag_id, run_id, dossier.id, done.step or "", actor=caller.name)
    except (hitl.AirflowApiError, OSError) as exc:
        raise AirflowDown(f"Le dossier est revenu à « {states.label(done.state, dossier.flow)} » mais Airflow n'a "
                          f"pas relancé le run : {exc}. Réessayez la relance.") from exc
    return actions.Done(done.action, done.dossier_id, True, f"{done.message} ({what}).", step=done.step,
                        state=done.state)


def real_files(files: list | None) -> list:
    """Browsers send an empty part when no file is chosen: drop it."""
    return [f for f in files or [] if (getattr(f, "filename", "") or "") or (getattr(f, "size", 0) or 0)]


class BodyLimit:
    """Refuse an announced body larger than any upload we accept, before a byte of it is spooled."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            length = dict(scope.get("headers") or []).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                from starlette.responses import JSONResponse, PlainTextResponse

                mib = self.max_bytes // (1024 * 1024)
                text = f"Envoi trop volumineux (plus de {mib} Mio)."
                response = (JSONResponse({"erreur": text, "correction": "Réduisez la taille du fichier."},
                                         status_code=413) if "/api/" in scope.get("path", "")
                            else PlainTextResponse(text + " Réduisez la taille du fichier.", status_code=413))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
