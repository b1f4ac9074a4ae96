"""RetourClassification read correctly (reference sample), national default, round trip."""

from __future__ import annotations

from datetime import date

import pytest

from flows.actes.classification import (
    build_retour_classification,
    national_default,
    parse_retour_classification,
)

from .conftest import official_errors


@pytest.fixture(scope="module")
def sample(reference):
    return parse_retour_classification((reference / "actes" / "samples" / "RetourClassification_example.xml").read_bytes())


def test_sample_date_and_natures(sample):
    assert sample.date == date(2017, 11, 13)
    assert set(sample.natures) == {"DE", "AR", "AI", "CC", "BF", "AU"}
    de = sample.natures["DE"]
    assert (de.code, de.label) == (1, "Délibérations")
    assert list(de.typologies) == ["99_DE", "12_AD", "21_DA", "21_GP", "31_CO", "31_DP", "32_DP"]
    assert de.typologies["99_DE"] == "Délibération"
    assert sample.typologies("BF") == {"99_BU": "Budget", "70_DE": "Délibération"}
    assert sample.typologies(4)["11_AP"] == "Cahier des clauses administratives particulières"
    assert len(sample.typologies("AI")) == 20
    assert not sample.national_default


def test_sample_matieres(sample):
    assert [n.code for n in sample.tree] == [str(i) for i in range(1, 10)]
    assert sample.tree[0].label == "Commande Publique"
    finances = sample.tree[6]
    assert finances.label == "Finances locales"
    assert [c.code for c in finances.children][:3] == ["7.1", "7.10", "7.2"]
    assert sample.matiere_label("7.10") == "Divers"
    assert sample.matiere_label("5.8") == "Decision d ester en justice"
    assert sample.matiere_label("2.1") == "Documents d urbanisme"  # labels stripped
    assert len(sample.matieres) == 9 + 57
    assert sample.has_matiere("1.7") and not sample.has_matiere("1.8") and not sample.has_matiere("7.10.2")
    assert sample.check_matiere("7.10.2")[0] == "error"


def test_national_default():
    n = national_default()
    assert n.national_default and n.date is None
    assert n.has_matiere("7.10") and n.has_matiere("9.4") and not n.has_matiere("9.5")
    assert n.check_matiere("7.10.2")[0] == "warning"  # level 3 unknown without the préfecture
    assert n.check_matiere("7.11.2")[0] == "error"
    assert n.check_matiere("10.1")[0] == "error"
    assert n.main_typologies("DE") == ("99_DE",) and n.default_typologie("BF") == "99_BU"
    assert len([c for c in n.matieres if "." in c]) == 7 + 3 + 6 + 5 + 8 + 5 + 10 + 9 + 4


def test_round_trip_and_official_validity(sample, official_schema):
    xml = build_retour_classification(sample)
    assert official_errors(official_schema, xml) == []
    again = parse_retour_classification(xml)
    assert again.date == sample.date and again.matieres == sample.matieres
    assert {k: v.typologies for k, v in again.natures.items()} == {k: v.typologies for k, v in sample.natures.items()}
    deep = national_default(date(2024, 1, 15))
    deep.tree[6].children[9].children.append(type(deep.tree[0])("7.10.2", "Divers : autres"))
    deep.matieres.clear()
    deep.__post_init__()
    xml = build_retour_classification(deep)
    assert official_errors(official_schema, xml) == []
    assert parse_retour_classification(xml).matiere_label("7.10.2") == "Divers : autres"


def test_refusals():
    with pytest.raises(ValueError, match="RetourClassification"):
        parse_retour_classification(b"<a:ARActe xmlns:a='http://www.interieur.gouv.fr/ACTES#v1.1-20040216'/>")
    with pytest.raises(ValueError):
        build_retour_classification(national_default())  # no date
