"""The signature API the official's agent calls (`demat-signer`): /demat/api/v1/signatures (docs/signature.md).

Authenticated like the rest of the business API (Airflow's JWT, demat_airflow.ui.api): the caller
is the official's own Airflow account; a dossier of another official answers 404. Changing a
dossier (prepare, post signatures, reject) needs the token in the Authorization header. Errors are
`{"erreur", "correction"}` in French. The domain is flows.pipeline.signing; once a dossier's
signature is assembled and its decision recorded, demat answers the SIGNATURE step's Airflow HITL
with its service identity (ui/hitl.py), after the response, so the dossier's run moves on by the
same path as an approval in the Parapheur page.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import BackgroundTasks, Body, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from demat_airflow.ui.api import ERRORS, ApiCaller, ApiError, ApiWriter, DossierId, Erreur

log = logging.getLogger(__name__)
HITL_ATTEMPTS = 8
HITL_PAUSE = 5.0  # seconds between attempts (a just-parked HITL must settle: ui/hitl.py SETTLE_SECONDS)


class DemandeLot(BaseModel):
    ids: list[Annotated[str, Field(max_length=80)]] = Field(default_factory=list, max_length=200,
                                                            description="Dossiers à signer (vide : tous ceux en attente)")
    certificate: str = Field(max_length=32768, description="Certificat du support, DER en base64")


class Rejet(BaseModel):
    motif: str = Field(max_length=2000, description="Pourquoi l'élu refuse de signer (obligatoire)")


def _settings():
    from demat_airflow.context import settings

    return settings()


def _call(fn, *args):
    from flows.pipeline.signing import SigningError

    try:
        return fn(_settings(), *args)
    except SigningError as exc:
        raise ApiError(exc.status, exc.erreur, exc.correction) from None


def answer_hitl(user: str, dossier_id: str, step: int, option: str, motif: str = "") -> bool:
    """Answer the step's Airflow HITL for `user` with demat's service identity (ui/hitl.py).

    The decision is already in demat's record (flows.pipeline.signing): this only wakes the run.
    A HITL not parked yet needs no answer (the operator finds the decision and does not park).
    """
    from demat_airflow.task_ids import step_task_id
    from demat_airflow.ui import hitl
    from flows.dossier import service
    from flows.dossier.db import session_scope

    with session_scope(_settings().database_url) as s:
        run_id = service.get(s, dossier_id).run_id
    task_id = step_task_id(step)
    last = "demande introuvable"
    for attempt in range(HITL_ATTEMPTS):
        if attempt:
            time.sleep(HITL_PAUSE)
        try:
            items = hitl.pending_for(user)
        except hitl.AirflowApiError as exc:
            last = str(exc)
            continue
        item = next((p for p in items if p.run_id == run_id and p.task_id == task_id), None)
        if item is None:
            last = "aucune demande en attente (déjà traitée, ou pas encore posée : la décision enregistrée suffit)"
            if attempt >= 1:
                return False
            continue
        if not item.settled():
            continue
        done, last = hitl.respond(user, item, option, motif)
        if done or "déjà traité" in last:
            return True
    log.warning("Dossier %s : la demande de parapheur %s n'a pas pu être close (%s) ; la décision est enregistrée "
                "dans demat.", dossier_id, task_id, last)
    return False


def signature_routes(api: FastAPI) -> None:
    """Adds the /signatures routes to the business API app (demat_airflow.ui.api.create_api)."""
    tag = ["Signature sur support"]

    @api.get("/signatures/pending", tags=tag, responses=ERRORS, summary="Ce qui attend ma signature sur mon support")
    def pending(caller: ApiCaller) -> dict:
        from flows.pipeline import signing

        return {"items": _call(signing.pending_for, caller.id)}

    @api.post("/signatures/batch", tags=tag, responses=ERRORS | {413: {"model": Erreur}},
              summary="Préparer un lot pour le certificat du support (demat-batch/1)")
    def prepare(caller: ApiWriter, demande: DemandeLot) -> dict:
        from flows.pipeline import signing

        return _call(signing.prepare_batch, caller.id, demande.ids or None, demande.certificate)

    @api.post("/signatures/batch/{batch_id}", tags=tag, responses=ERRORS,
              summary="Déposer les valeurs signées par le support (demat-signatures/1)")
    def post_signatures(batch_id: Annotated[str, PathParam(pattern=r"^lot-[0-9a-f]{16}$", max_length=40)],
                        caller: ApiWriter, background: BackgroundTasks,
                        reponse: Annotated[dict, Body(description="demat-signatures/1")]) -> dict:
        from flows.pipeline import signing
        from flows.pipeline.steps import APPROVE

        outcome = _call(signing.apply_batch, caller.id, batch_id, reponse)
        for dossier_id, step in outcome.completed:
            background.add_task(answer_hitl, caller.id, dossier_id, step, APPROVE, "")
        out = outcome.to_dict()
        n = len(outcome.signed)
        out["message"] = (f"{n} dossier(s) signé(s) et vérifié(s)" if n else "Aucun dossier complété") + (
            f", {len(outcome.waiting)} en attente d'autres signatures" if outcome.waiting else "") + (
            f", {len(outcome.refused)} signature(s) refusée(s)" if outcome.refused else "") + "."
        return out

    @api.get("/signatures/{dossier_id}", tags=tag, responses=ERRORS, summary="Le résumé d'un dossier à signer")
    def show(dossier_id: DossierId, caller: ApiCaller) -> dict:
        from flows.pipeline import signing

        return _call(signing.summary, caller.id, dossier_id)

    @api.get("/signatures/{dossier_id}/document", tags=tag, responses=ERRORS, summary="Le document à signer")
    def document(dossier_id: DossierId, caller: ApiCaller) -> Response:
        from flows.pipeline import signing
        from flows.pipeline.actions import safe_filename

        name, media, data = _call(signing.document, caller.id, dossier_id)
        return Response(data, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{safe_filename(name) or "document"}"'})

    @api.post("/signatures/{dossier_id}/reject", tags=tag, responses=ERRORS,
              summary="Refuser de signer, avec un motif (le même rejet qu'au Parapheur)")
    def reject(dossier_id: DossierId, caller: ApiWriter, rejet: Rejet, background: BackgroundTasks) -> dict:
        from flows.pipeline import signing
        from flows.pipeline.steps import REJECT, plain_text

        step = _call(signing.reject, caller.id, dossier_id, rejet.motif)
        background.add_task(answer_hitl, caller.id, dossier_id, step, REJECT, plain_text(rejet.motif, 500))
        return {"message": f"Refus du dossier {dossier_id} enregistré, avec son motif."}
