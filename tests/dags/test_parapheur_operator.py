"""The parapheur operator's own decisions, outside a running scheduler: what it records and where
it branches (to the next step, to the signature, nowhere) and what a deadline does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.actes.generate import generate_acte_zip
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import steps


@pytest.fixture
def dossier(demo_settings, monkeypatch):
    from demat_airflow import context

    monkeypatch.setattr(context, "settings", lambda: demo_settings)
    coll = demo_settings.config.collectivite("cc-chalosse-tursan")
    data = generate_acte_zip(collectivite=coll, numero="OPE2026_01", nature="CC", matiere="1.1")
    sha = ArtefactStore(demo_settings.store_root).put(data)
    with session_scope(demo_settings.database_url) as s:
        dossier_id = service.create(s, collectivite=coll.slug, flow="actes", original_name="contrat.zip",
                                    sha256=sha, size=len(data)).id
    assert steps.validate(demo_settings, dossier_id).state == "valide"
    return demo_settings, dossier_id


def _operator(step: int):
    from demat_airflow.operators import ParapheurOperator

    return ParapheurOperator(task_id=f"parapheur_{step}", step=step)


def _follow(monkeypatch, op) -> list:
    branched: list = []
    monkeypatch.setattr(op, "do_branch", lambda context, target: branched.append(target))
    return branched


def test_each_step_branches_to_the_next_then_to_the_signature(dossier, monkeypatch):
    settings, dossier_id = dossier
    context = {"params": {"dossier_id": dossier_id}}
    for step, user, target in ((1, "dgs.chalosse", "parapheur_2"), (2, "finances.chalosse", "parapheur_3"),
                               (3, "president.chalosse", "sign_and_transmit")):
        op = _operator(step)
        steps.parapheur_request(settings, dossier_id, step=step)
        branched = _follow(monkeypatch, op)
        event = {"chosen_options": ["Approuver"], "params_input": {"motif": ""},
                 "responded_at": datetime.now(UTC), "responded_by_user": {"id": user, "name": user}}
        op.execute_complete(context, event)
        assert branched == [target]
    # a retried step after its decision asks nobody and moves on
    op = _operator(3)
    branched = _follow(monkeypatch, op)
    op.execute(context)
    assert branched == ["sign_and_transmit"]


def test_a_rejection_branches_nowhere(dossier, monkeypatch):
    settings, dossier_id = dossier
    op = _operator(1)
    steps.parapheur_request(settings, dossier_id, step=1)
    branched = _follow(monkeypatch, op)
    op.execute_complete({"params": {"dossier_id": dossier_id}}, {
        "chosen_options": ["Rejeter"], "params_input": {"motif": "Montant à revoir"},
        "responded_at": datetime.now(UTC), "responded_by_user": {"id": "dgs.chalosse", "name": "dgs.chalosse"}})
    assert branched == [None]
    with session_scope(settings.database_url) as s:
        assert service.get(s, dossier_id).state == "rejete_parapheur"


def test_a_deadline_ends_the_dossier_and_fails_the_task(dossier, monkeypatch):
    from datetime import timedelta

    from airflow.sdk.exceptions import AirflowFailException

    settings, dossier_id = dossier
    op = _operator(1)
    steps.parapheur_request(settings, dossier_id, step=1)
    op.response_timeout = timedelta(days=10)
    with pytest.raises(AirflowFailException, match="Délai du parapheur dépassé"):
        op.execute_complete({"params": {"dossier_id": dossier_id}},
                            {"error": "timeout", "error_type": "timeout"})
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        assert d.state == "parapheur_expire" and "10 jour(s)" in d.reason
