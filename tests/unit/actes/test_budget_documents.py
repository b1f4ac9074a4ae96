"""Issue 15: an acte of nature BF carrying a TotEM DocumentBudgetaire is checked, not just parsed.

Schema (the project's schemas/budget/DocumentBudgetaire.xsd), the collectivité's SIRET/SIREN,
the exercise against the decision date and the Scellement, reported in French.
Before issue 15 every well-formed XML was accepted.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from datetime import UTC, date, datetime

import pytest

from flows.actes.budget import NS_BUDGET, generate_budget, seal, validate_budget
from flows.actes.validate import validate_acte_zip

from .conftest import make_collectivite

TODAY = date(2025, 3, 20)
DECISION = date(2025, 3, 14)
SIRET = "21400293300015"  # Saint-Sever (demo configuration): SIREN 214002933


def rules(findings, severity: str | None = "error") -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity == severity}


def budget(**kw) -> bytes:
    params = dict(siret=SIRET, exer=2025)
    params.update(kw)
    return generate_budget(**params)


def acte_zip(tmp_path, xml: bytes, name: str = "budget.xml"):
    meta = {"nature": "BF", "matiere": "7.1", "numero_interne": "BP2025_001", "objet": "Budget primitif 2025",
            "date_decision": DECISION.isoformat(), "document": name, "classification_date": "2024-01-15"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, xml)
        zf.writestr("acte.json", json.dumps(meta))
    path = tmp_path / "depot.zip"
    path.write_bytes(buf.getvalue())
    return path


# ------------------------------------------------------------------ the acte flow calls it


@pytest.mark.parametrize("sealed", [False, True])
def test_valid_budget_acte_is_valid(tmp_path, sealed):
    report = validate_acte_zip(acte_zip(tmp_path, budget(sealed=sealed)), make_collectivite(), today=TODAY)
    assert report.ok, report.to_text()
    info = report.summary["budgets"][0]
    assert info["exercice"] == "2025" and info["scelle"] is sealed and info["lignes"] == 3


@pytest.mark.parametrize("xml,rule", [
    (b"<DocumentBudgetaire/>", "BUDGET-RACINE"),  # accepted before issue 15
    (b'<DocumentBudgetaire xmlns="urn:autre"/>', "BUDGET-RACINE"),
    (b"<html><body>budget</body></html>", "BUDGET-RACINE"),
    (f'<DocumentBudgetaire xmlns="{NS_BUDGET}"/>'.encode(), "BUDGET-XSD"),
])
def test_wellformed_but_not_a_budget_is_refused(tmp_path, xml, rule):
    report = validate_acte_zip(acte_zip(tmp_path, xml), make_collectivite(), today=TODAY)
    assert not report.ok and rule in rules(report.findings), report.to_text()
    f = next(f for f in report.errors if f.rule == rule)
    assert f.message.startswith("budget.xml : ") and f.fix and "document budgétaire « budget.xml »" in f.place


# ------------------------------------------------------------------ schema


SCHEMA_FAULTS = {
    "NatDec hors liste": (r'<NatDec V="01"/>', '<NatDec V="05"/>'),
    "CodRD hors liste": (r'<CodRD V="D"/>', '<CodRD V="X"/>'),
    "Exer absent": (r'<Exer V="2025"/>', ""),
    "Exer non numérique": (r'<Exer V="2025"/>', '<Exer V="deux mille"/>'),
    "montant à 3 décimales": (r'<MtPrev V="1250.00"/>', '<MtPrev V="1250.001"/>'),
    "élément inventé": (r"<InformationsGenerales/>", '<InformationsGenerales/><Inconnu V="1"/>'),
    "sans ligne budgétaire": (r"(?s)<LigneBudget>.*</LigneBudget>", ""),
    "IdEtab de 13 chiffres": (rf'<IdEtab V="{SIRET}"/>', f'<IdEtab V="{SIRET[:-1]}"/>'),
    "ordre des blocs": (r"(<EnTeteBudget>.*?</EnTeteBudget>)(<BlocBudget>.*?</BlocBudget>)", r"\2\1"),
}


@pytest.mark.parametrize("fault", sorted(SCHEMA_FAULTS))
def test_schema_faults_are_refused_in_french(fault):
    pattern, repl = SCHEMA_FAULTS[fault]
    text = budget().decode()
    bad, n = re.subn(pattern, repl, text, count=1, flags=re.S)
    assert n, fault
    found = validate_budget(bad.encode(), name="bp2025.xml", decision_date=DECISION)
    assert "BUDGET-XSD" in rules(found), [f.message for f in found]
    for f in found:
        head = f.message.split("(libxml2 :")[0]
        assert head.startswith("bp2025.xml : ") and "Element '" not in head and " is not " not in head


# ------------------------------------------------------------------ collectivité


def _siret_with_bad_siren() -> str:
    from stdnum.fr import siren as s

    from flows.helios.generate import luhn_complete

    for prefix in range(21400000, 21409999):
        cand = luhn_complete(f"{prefix}9" + "0000")  # 13 digits + key -> whole SIRET key right
        if len(cand) == 14 and not s.is_valid(cand[:9]):
            return cand
    raise AssertionError


def test_siret_key_and_siren_part_named():
    bad_key = SIRET[:-1] + str((int(SIRET[-1]) + 1) % 10)
    found = validate_budget(budget(siret=bad_key), decision_date=DECISION)
    f = next(f for f in found if f.rule == "BUDGET-SIRET")
    assert "NIC" in f.message or "clé du SIRET" in f.message
    bad_siren = _siret_with_bad_siren()
    found = validate_budget(budget(siret=bad_siren), decision_date=DECISION)
    f = next(f for f in found if f.rule == "BUDGET-SIRET")
    assert "SIREN" in f.message and bad_siren[:9] in f.message and "clé du SIRET" not in f.message


def test_budget_of_another_collectivite_is_refused(tmp_path):
    other = "21330063500017"  # Bordeaux
    report = validate_acte_zip(acte_zip(tmp_path, budget(siret=other)), make_collectivite(), today=TODAY)
    f = next(f for f in report.errors if f.rule == "BUDGET-COLLECTIVITE")
    assert "214002933" in f.message and "213300635" in f.message
    # without a known collectivité the identifiers are still checked, not their owner
    assert "BUDGET-COLLECTIVITE" not in rules(validate_budget(budget(siret=other), decision_date=DECISION))


def test_siren_only_idcoll_is_accepted_when_its_key_is_right():
    xml = budget().replace(f'<IdColl V="{SIRET}"/>'.encode(), b'<IdColl V="214002933"/>')
    assert validate_budget(xml, siren="214002933", decision_date=DECISION) == []
    bad = budget().replace(f'<IdColl V="{SIRET}"/>'.encode(), b'<IdColl V="214002934"/>')
    assert "BUDGET-SIREN" in rules(validate_budget(bad, decision_date=DECISION))


# ------------------------------------------------------------------ exercise


@pytest.mark.parametrize("natdec,exer,ok", [
    ("01", 2025, True), ("01", 2026, True),  # a BP voted in December for the next year
    ("01", 2019, False), ("02", 2027, False),
    ("09", 2024, True),  # the compte administratif of the year before
    ("09", 2026, False),  # a CA cannot be for a year not begun
])
def test_exercise_against_decision_date(natdec, exer, ok):
    found = validate_budget(budget(natdec=natdec, exer=exer), decision_date=DECISION)
    assert ("BUDGET-EXERCICE" not in rules(found)) is ok, [f.message for f in found]
    if not ok:
        f = next(f for f in found if f.rule == "BUDGET-EXERCICE")
        assert str(exer) in f.message and "14/03/2025" in f.message and f.value == str(exer)


# ------------------------------------------------------------------ Scellement


def test_seal_detects_a_change_after_sealing():
    sealed = budget(sealed=True)
    assert validate_budget(sealed, decision_date=DECISION) == []
    changed = sealed.replace(b'<MtPrev V="1250.00"/>', b'<MtPrev V="9250.00"/>')
    f = next(f for f in validate_budget(changed, decision_date=DECISION) if f.rule == "BUDGET-SCELLEMENT")
    assert "modifié après avoir été scellé" in f.message and "MD5" in f.message and "SHA-1" in f.message


def test_seal_is_independent_of_where_the_scellement_sits_and_of_hex_or_base64():
    import base64

    sealed = budget(sealed=True).decode()
    m = re.search(r'md5="([0-9a-f]+)" sha1="([0-9a-f]+)"', sealed)
    b64 = sealed.replace(m.group(1), base64.b64encode(bytes.fromhex(m.group(1))).decode())
    b64 = b64.replace(m.group(2), base64.b64encode(bytes.fromhex(m.group(2))).decode())
    assert validate_budget(b64.encode(), decision_date=DECISION) == []
    upper = sealed.replace(m.group(1), m.group(1).upper())
    assert validate_budget(upper.encode(), decision_date=DECISION) == []


def test_seal_algorithm_is_c14n_without_the_scellement():
    from lxml import etree

    from flows import xmlsafe

    sealed = budget(sealed=True)
    root = xmlsafe.parse_bytes(sealed)
    sc = root.find(f"{{{NS_BUDGET}}}Scellement")
    root.remove(sc)
    octets = etree.tostring(root, method="c14n", exclusive=False, with_comments=False)
    assert sc.get("sha1") == hashlib.sha1(octets).hexdigest()  # noqa: S324
    assert sc.get("md5") == hashlib.md5(octets).hexdigest()  # noqa: S324
    resealed = seal(sealed, datetime(2025, 2, 1, tzinfo=UTC))
    assert resealed.count(b"<Scellement") == 1


def test_sealed_budget_changed_refuses_the_acte(tmp_path):
    changed = budget(sealed=True).replace(b'<Nature V="6068"/>', b'<Nature V="6069"/>')
    report = validate_acte_zip(acte_zip(tmp_path, changed), make_collectivite(), today=TODAY)
    assert "BUDGET-SCELLEMENT" in rules(report.findings)


# ------------------------------------------------------------------ hostile


def test_hostile_and_broken_budgets(tmp_path):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<DocumentBudgetaire>&b;</DocumentBudgetaire>")
    found = validate_budget(bomb, decision_date=DECISION)
    assert rules(found) == {"BUDGET-XML-DANGEREUX"}
    truncated = budget()[:400]
    f = validate_budget(truncated, name="bp.xml", decision_date=DECISION)[0]
    assert f.rule == "ACTES-XML-ILLISIBLE" and f.message.startswith("bp.xml : le document budgétaire XML est illisible")
    assert f.message.split("(libxml2 :")[0].count("Premature") == 0
    report = validate_acte_zip(acte_zip(tmp_path, bomb), make_collectivite(), today=TODAY)
    assert not report.ok and "BUDGET-XML-DANGEREUX" in rules(report.findings)


def test_project_budget_schema_stands_alone():
    """Run time reads the project's own schema, never ../shared, and it imports nothing."""
    from lxml import etree

    from flows.actes.budget import SCHEMA_PATH

    assert "shared" not in SCHEMA_PATH.parts and SCHEMA_PATH.is_file()
    tree = etree.parse(str(SCHEMA_PATH))
    xs = "{http://www.w3.org/2001/XMLSchema}"
    assert not list(tree.iter(f"{xs}import", f"{xs}include"))
    assert tree.getroot().get("targetNamespace") == NS_BUDGET
