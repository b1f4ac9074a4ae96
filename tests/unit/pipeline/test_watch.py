"""Silence watch: a dossier transmitted without acknowledgment past its threshold is alerted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.pipeline.watch import alert_stuck, find_stuck
from flows.settings import REPO, Settings


def _settings(tmp_path, url) -> Settings:
    return Settings(state_dir=tmp_path, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=url,
                    store_root=str(tmp_path / "store"), inbox_root=tmp_path / "inbox", pki_dir=tmp_path / "pki",
                    reference_dir=tmp_path)


def test_stuck_after_threshold_alerted_once_and_resumes(tmp_path, demat_db):
    settings = _settings(tmp_path, demat_db)
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="actes", original_name="a.zip", sha256="c" * 64, size=1)
        for target in ("valide", "au_parapheur", "signe", "transmis"):
            service.transition(s, d, target, message=target)
        dossier_id = d.id
    now = datetime.now(UTC)
    assert find_stuck(settings, now=now + timedelta(hours=3)) == []  # ARActe threshold is 4 h
    later = now + timedelta(hours=5)
    stuck = find_stuck(settings, now=later)
    assert [x.dossier_id for x in stuck] == [dossier_id]
    assert "accusé de réception de la préfecture" in stuck[0].message()
    assert len(alert_stuck(settings, now=later)) == 1
    assert alert_stuck(settings, now=later + timedelta(hours=1)) == []  # one alert, not one per check
    with session_scope(demat_db) as s:
        d = service.get(s, dossier_id)
        assert d.waiting_reason and "seuil 4 h" in d.waiting_reason
        service.transition(s, d, "acquitte", message="ARActe enfin reçu")  # resumes normally
        assert d.waiting_reason is None
    assert find_stuck(settings, now=later) == []


def test_parapheur_deadline_ends_in_a_named_error_state(tmp_path, demat_db):
    from flows.pipeline.steps import parapheur_expired

    settings = _settings(tmp_path, demat_db)
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="helios", original_name="p.xml", sha256="d" * 64, size=1)
        service.transition(s, d, "valide", message="ok")
        service.transition(s, d, "au_parapheur", message="parapheur")
        dossier_id = d.id
    outcome = parapheur_expired(settings, dossier_id, deadline_days=30)
    assert outcome.state == "parapheur_expire" and not outcome.proceed
    with session_scope(demat_db) as s:
        d = service.get(s, dossier_id)
        assert d.state == "parapheur_expire" and "30 jour(s)" in d.reason
        assert d.journal[-1].event == "alerte_parapheur"
    assert parapheur_expired(settings, dossier_id, deadline_days=30).state == "parapheur_expire"  # idempotent
