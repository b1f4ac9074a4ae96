"""Facts become alerts once each, addressed to the right people (real PostgreSQL, real journal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from flows.alerts.models import Alert, AlertDelivery
from flows.alerts.record import record_all, record_certificates
from flows.dossier import journal, service
from flows.dossier.db import session_scope
from flows.dossier.models import JournalEntry

from .conftest import new_dossier


def _alerts(url: str, kind: str | None = None) -> list[Alert]:
    with session_scope(url) as s:
        stmt = select(Alert).order_by(Alert.id)
        if kind:
            stmt = stmt.where(Alert.kind == kind)
        alerts = s.execute(stmt).scalars().all()
        for a in alerts:
            _ = [d.recipient for d in a.deliveries]  # loaded before the session closes
        return alerts


def test_refusal_is_recorded_once_for_the_agents_and_the_contact(make_settings):
    settings = make_settings()
    url = settings.database_url
    dossier_id = new_dossier(url, ("refuse_validation",), name="pes-ko.xml",
                             message="Document refusé : 1 erreur(s). TIERS-IBAN : IBAN invalide")
    new_dossier(url, ("valide",))  # not a refusal: no alert
    assert record_all(settings, operators=["admin"], certificates=False)["refus"] == 1
    assert record_all(settings, operators=["admin"], certificates=False)["refus"] == 0  # same fact, not twice
    (alert,) = _alerts(url)
    with session_scope(url) as s:
        entry = s.execute(select(JournalEntry).where(JournalEntry.dossier_id == dossier_id,
                                                     JournalEntry.state_to == "refuse_validation")).scalar_one()
    assert alert.key == f"refus:{entry.id}" and alert.journal_id == entry.id
    assert alert.kind == "refus" and alert.dossier_id == dossier_id and alert.collectivite == "saint-sever"
    assert alert.recipients == ["agent.saintsever", "secretariat@saint-sever.example"]
    assert sorted(d.recipient for d in alert.deliveries) == sorted(alert.recipients)
    assert alert.subject == f"Dossier {dossier_id} : Refusé à la validation"
    assert "« pes-ko.xml »" in alert.text and "Motif : Document refusé" in alert.text and "IBAN invalide" in alert.text
    assert "déposez le fichier corrigé" in alert.action
    assert alert.link == f"https://demat.example.fr/demat/dossiers/{dossier_id}"


def test_every_refusal_state_alerts_and_operators_hear_of_sae_refusals_and_errors(make_settings):
    settings = make_settings()
    url = settings.database_url
    new_dossier(url, ("valide", "au_parapheur", "rejete_parapheur"), flow="actes", name="acte.zip",
                message="Rejeté au parapheur par maire.saintsever : montant erroné")
    new_dossier(url, ("valide", "au_parapheur", "signe", "transmis", "refuse_etat"), message="PES_ACQUIT refusé")
    new_dossier(url, ("valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "refuse_sae"),
                coll="cc-chalosse-tursan", message="Accord de versement inconnu")
    new_dossier(url, ("erreur",), message="Fichier illisible dans le stockage")
    assert record_all(settings, operators=["admin", "operateur"], certificates=False)["refus"] == 4
    by_state = {a.subject.split(" : ", 1)[1]: a for a in _alerts(url)}
    assert set(by_state) == {"Rejeté au parapheur", "Refusé par la DGFiP (PES_ACQUIT)", "Refusé par le SAE",
                             "En erreur"}
    assert "operateur" not in by_state["Rejeté au parapheur"].recipients  # the demo names its operator list
    sae = by_state["Refusé par le SAE"]
    assert sae.collectivite == "cc-chalosse-tursan"
    assert sae.recipients == ["agent.chalosse", "direction@chalosse-tursan.example", "operateur"]
    assert "operateur" in by_state["En erreur"].recipients
    assert "PES_ACQUIT de la DGFiP" in by_state["Refusé par la DGFiP (PES_ACQUIT)"].action


def test_first_scan_reads_only_a_day_of_history(make_settings):
    settings = make_settings()
    url = settings.database_url
    new_dossier(url, ("refuse_validation",))
    later = datetime.now(UTC) + timedelta(days=3)  # the platform meets an old journal for the first time
    assert record_all(settings, now=later, certificates=False)["refus"] == 0
    new_dossier(url, ("refuse_validation",))  # a new refusal after the first scan is alerted
    assert record_all(settings, now=later, certificates=False)["refus"] == 1


def test_stuck_dossier_alerted_once_per_waiting_episode(make_settings):
    settings = make_settings()
    url = settings.database_url
    dossier_id = new_dossier(url, ("valide", "au_parapheur", "signe", "transmis"), flow="actes", name="acte.zip")
    now = datetime.now(UTC)
    assert record_all(settings, now=now + timedelta(hours=3), certificates=False)["bloque"] == 0  # ARActe: 4 h
    assert record_all(settings, now=now + timedelta(hours=5), certificates=False)["bloque"] == 1
    assert record_all(settings, now=now + timedelta(hours=9), certificates=False)["bloque"] == 0  # same episode
    (alert,) = _alerts(url, "bloque")
    assert alert.recipients == ["agent.saintsever", "secretariat@saint-sever.example", "operateur"]
    assert "accusé de réception de la préfecture" in alert.text and "seuil 4 h" in alert.text
    with session_scope(url) as s:  # an operator retries the transmission: a new wait, a new episode
        d = service.get(s, dossier_id)
        service.transition(s, d, "erreur", message="relance")
        service.transition(s, d, "transmis", message="retransmis")
    assert record_all(settings, now=now + timedelta(hours=10), certificates=False)["bloque"] == 1


def test_parapheur_deadline_near_alerts_the_step_respondents_once(make_settings):
    settings = make_settings()
    url = settings.database_url
    dossier_id = new_dossier(url, ("valide", "au_parapheur"), flow="actes", name="deliberation.zip")
    now = datetime.now(UTC)
    record_all(settings, now=now, certificates=False)
    assert record_all(settings, now=now + timedelta(days=20), certificates=False)["echeance_parapheur"] == 0
    assert record_all(settings, now=now + timedelta(days=28), certificates=False)["echeance_parapheur"] == 1
    assert record_all(settings, now=now + timedelta(days=29), certificates=False)["echeance_parapheur"] == 0
    (alert,) = _alerts(url, "echeance_parapheur")
    assert alert.recipients == ["maire.saintsever"]  # the signing official's Airflow user
    assert alert.dossier_id == dossier_id and alert.link == "https://demat.example.fr/demat/parapheur"
    assert "attend votre signature (étape 1/1)" in alert.text and "il reste 1 jour(s)" in alert.text
    assert "Sans réponse à l'échéance" in alert.action


def test_visa_step_deadline_counts_from_when_that_step_was_asked(make_settings):
    def two_steps(data):
        data["collectivites"][0]["circuits"]["acte"] = [
            {"kind": "VISA", "users": ["dgs.saintsever"], "deadline_days": 2},
            {"kind": "SIGNATURE", "official": "maire", "deadline_days": 10},
        ]

    settings = make_settings(two_steps)
    url = settings.database_url
    dossier_id = new_dossier(url, ("valide", "au_parapheur"), flow="actes", name="arrete.zip")
    now = datetime.now(UTC)
    record_all(settings, now=now, certificates=False)
    # the VISA step (2 days): warned after half its deadline at most
    assert record_all(settings, now=now + timedelta(hours=25), certificates=False)["echeance_parapheur"] == 1
    assert _alerts(url, "echeance_parapheur")[0].recipients == ["dgs.saintsever"]
    with session_scope(url) as s:  # visa given on day 2, the signature step is asked (as steps.py records it)
        d = service.get(s, dossier_id)
        d.extra = {"parapheur": {"asked": [1, 2], "decisions": {"1": {"kind": "VISA"}}}}
        journal.append(s, dossier_id=dossier_id, event="parapheur_etape", message="Étape 2/2",
                       details={"step": 2}, at=now + timedelta(days=2))
    assert record_all(settings, now=now + timedelta(days=8), certificates=False)["echeance_parapheur"] == 0
    assert record_all(settings, now=now + timedelta(days=9, hours=1), certificates=False)["echeance_parapheur"] == 1
    second = _alerts(url, "echeance_parapheur")[1]
    assert second.recipients == ["maire.saintsever"] and "étape 2/2" in second.text


def test_certificate_alerted_once_per_threshold_to_operators_and_its_official(make_settings, tmp_path):
    from flows.signature.pki import make_certificate, write_pkcs12, write_private

    settings = make_settings()
    pki = settings.pki_dir
    pki.mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    ca = make_certificate("AC test alertes", is_ca=True, days=3650)
    for ident, name, days in (("maire-saint-sever", "Claire Dupré", 20), ("president-chalosse-tursan", "Jean Labadie", 400)):
        key, cert = make_certificate(name, issuer=ca, role="Maire", not_before=now - timedelta(days=100),
                                     not_after=now + timedelta(days=days, hours=1))
        write_pkcs12(pki / f"{ident}.p12", key, cert, [ca[1]], b"pw-test-alertes")
        write_private(pki / f"{ident}.pass", b"pw-test-alertes\n")
    url = settings.database_url
    with session_scope(url) as s:
        assert len(record_certificates(settings, s, now=now, operators=["operateur"])) == 1  # 20 days: J-30
        assert record_certificates(settings, s, now=now + timedelta(minutes=5), operators=["operateur"]) == []
    with session_scope(url) as s:  # checked at most hourly; the same threshold is not alerted again
        assert record_certificates(settings, s, now=now + timedelta(hours=2), operators=["operateur"]) == []
        assert len(record_certificates(settings, s, now=now + timedelta(days=14), operators=["operateur"])) == 1
    alerts = _alerts(url, "certificat")
    assert [a.key.rsplit(":", 1)[1] for a in alerts] == ["J-30", "J-7"]
    assert alerts[0].recipients == ["operateur", "maire.saintsever"] and alerts[0].collectivite == "saint-sever"
    assert alerts[0].certificate == "maire-saint-sever.p12" and "Claire Dupré" in alerts[0].subject
    assert "pw-test-alertes" not in alerts[0].text + alerts[0].action


def test_alert_without_anyone_to_tell_keeps_a_named_pending_delivery(make_settings):
    def nobody(data):
        coll = data["collectivites"][0]
        coll["agents"] = []
        coll.pop("email")  # the default is a placeholder (example.invalid)
        data["alerts"]["operators"] = []

    settings = make_settings(nobody)
    new_dossier(settings.database_url, ("refuse_validation",))
    record_all(settings, operators=[], certificates=False)
    (alert,) = _alerts(settings.database_url)
    assert alert.recipients == ["contact@example.invalid"]
    with session_scope(settings.database_url) as s:
        assert s.execute(select(AlertDelivery.recipient)).scalars().all() == ["contact@example.invalid"]


def test_a_letter_of_the_prefecture_alerts_the_collectivite_once(make_settings):
    settings = make_settings()
    url = settings.database_url
    dossier_id = new_dossier(url, ("valide", "au_parapheur", "signe", "transmis", "acquitte"), flow="actes",
                             name="deliberation-42.zip")
    with session_scope(url) as s:
        d = service.get(s, dossier_id)
        service.note(s, d, event="DemandePieceComplementaire", actor="préfecture",
                     message="Demande de pièces complémentaires : le plan de financement manque.")
        service.note(s, d, event="ARActe", actor="préfecture", message="Accusé de réception")  # not a letter
    counts = record_all(settings, operators=["admin"], certificates=False)
    assert record_all(settings, operators=["admin"], certificates=False)["refus"] == 0
    (alert,) = _alerts(url, "courrier")
    assert counts["refus"] == 1 and alert.key.startswith("courrier:")
    assert alert.recipients == ["agent.saintsever", "secretariat@saint-sever.example"]
    assert alert.subject == f"Dossier {dossier_id} : la préfecture a envoyé une demande de pièces complémentaires"
    assert "plan de financement" in alert.text and "Répondre à la préfecture" in alert.action
