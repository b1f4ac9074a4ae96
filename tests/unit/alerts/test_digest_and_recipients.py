"""The digest an agent reads (French, one per recipient) and who counts as "the right people"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from flows.alerts.digest import compose
from flows.alerts.models import Alert
from flows.alerts.recipients import for_collectivite, for_step, operators, resolve
from flows.alerts.wording import one_line
from flows.config import ConfigError, load_config
from flows.settings import REPO

DEMO = REPO / "flows" / "config" / "demo.yaml"
AT = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def _alert(i: int, coll: str | None, *, kind="refus", name="pes.xml") -> Alert:
    return Alert(id=i, key=f"k{i}", kind=kind, collectivite=coll, dossier_id=f"d{i}", recipients=[],
                 subject=f"Dossier d{i} : Refusé à la validation",
                 text=f"Le flux PES V2 « {name} » (dossier d{i}) est refusé.\nMotif : IBAN invalide",
                 action="Corrigez puis redéposez.", link=f"https://demat.example.fr/demat/dossiers/d{i}", created_at=AT)


def test_digest_counts_lists_each_dossier_and_says_what_to_do():
    config = load_config(DEMO)
    mail = compose([_alert(3, "saint-sever"), _alert(1, "saint-sever"), _alert(2, "saint-sever")], config)
    assert mail.subject == "demat : 3 alertes pour Commune de Saint-Sever"
    for i in (1, 2, 3):
        assert f"Dossier d{i} : Refusé à la validation" in mail.text
        assert f"Voir : https://demat.example.fr/demat/dossiers/d{i}" in mail.text
        assert f'href="https://demat.example.fr/demat/dossiers/d{i}"' in mail.html
    assert mail.text.index("d1 :") < mail.text.index("d2 :") < mail.text.index("d3 :")  # numbered in order
    assert "1. [Refus] Dossier d1" in mail.text and "Signalée le 04/03/2025 à 10:30" in mail.text  # Paris time
    assert "Motif : IBAN invalide" in mail.text and "Que faire : Corrigez puis redéposez." in mail.text
    assert "au plus une fois par heure" in mail.text


def test_digest_for_an_operator_groups_collectivites_and_the_platform():
    config = load_config(DEMO)
    mail = compose([_alert(1, "cc-chalosse-tursan"), _alert(2, None, kind="certificat"), _alert(3, "saint-sever")],
                   config, digest_minutes=120)
    assert mail.subject == "demat : 3 alertes pour 3 collectivités"
    assert mail.text.index("== Commune de Saint-Sever ==") < mail.text.index("== la plateforme ==")
    assert "[Certificat à renouveler]" in mail.text and "toutes les 2 heures" in mail.text
    two = compose([_alert(1, "saint-sever"), _alert(2, "cc-chalosse-tursan")], config)
    assert two.subject == ("demat : 2 alertes pour Communauté de communes Chalosse Tursan et "
                           "Commune de Saint-Sever")
    assert compose([_alert(1, "saint-sever")], config).subject == "demat : 1 alerte pour Commune de Saint-Sever"


def test_hostile_file_names_are_escaped_and_never_reach_a_header():
    config = load_config(DEMO)
    mail = compose([_alert(1, "saint-sever", name='<script>alert("x")</script>.xml')], config)
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert one_line("Objet\r\nBcc: victime@example.fr") == "Objet Bcc: victime@example.fr"
    assert len(one_line("x" * 600)) == 250


def test_recipients_are_resolved_from_the_configuration():
    config = load_config(DEMO)
    coll = config.collectivite("saint-sever")
    assert for_collectivite(coll) == ["agent.saintsever", "secretariat@saint-sever.example"]
    assert for_step(coll, coll.circuit("pes")[0]) == ["maire.saintsever"]
    assert operators(config, ["admin"]) == ["operateur"]  # the configured list wins over Airflow's
    assert resolve(config, "agent.saintsever", "saint-sever").address == "agent@saint-sever.example"
    assert resolve(config, "maire.saintsever").address == "maire@saint-sever.example"  # found in any collectivité
    assert resolve(config, "operateur").address == "exploitation@demat.example"
    missing = resolve(config, "admin")
    assert missing.address is None and "aucune adresse e-mail connue pour l'utilisateur « admin »" in missing.reason
    placeholder = resolve(config, "contact@example.invalid")
    assert placeholder.address is None and "non renseigné" in placeholder.reason


def test_alert_settings_are_optional_and_checked(tmp_path):
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    for key in ("emails", "alerts"):
        data.pop(key)
    for coll in data["collectivites"]:
        coll.pop("emails")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    old = load_config(tmp_path / "old.yaml")  # a configuration written before alerts existed stays valid
    assert old.alerts.digest_minutes == 60 and old.emails == {} and old.alerts.certificate_thresholds_days == [30, 7, 1]
    data["collectivites"][0]["emails"] = {"agent.saintsever": "pas-une-adresse"}
    data["alerts"] = {"digest_minutes": 0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bad.yaml")
    assert "adresse e-mail « pas-une-adresse » de l'utilisateur « agent.saintsever » invalide" in str(err.value)
    assert "alerts > digest_minutes" in str(err.value)
