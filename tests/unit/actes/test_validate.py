"""validate_acte_zip: every rule, on generated ZIPs, with and without the préfecture's classification."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date

import pytest

from flows.actes.classification import parse_retour_classification
from flows.actes.generate import generate_acte_zip
from flows.actes.pdf import minimal_pdf
from flows.actes.validate import validate_acte_zip

TODAY = date(2025, 3, 20)
DECISION = date(2025, 3, 14)


def write(tmp_path, data: bytes, name="depot.zip"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def gen(tmp_path, **kw):
    kw.setdefault("numero", "DEL2025_014")
    kw.setdefault("date_decision", DECISION)
    return write(tmp_path, generate_acte_zip(**kw))


def zip_json(tmp_path, meta: dict, files: dict[str, bytes]):
    base = {"nature": "DE", "matiere": "5.2", "numero_interne": "DEL2025_014", "objet": "Objet",
            "date_decision": DECISION.isoformat(), "document": "acte.pdf", "classification_date": "2024-01-15"}
    base.update(meta)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr("acte.json", json.dumps({k: v for k, v in base.items() if v is not None}))
    return write(tmp_path, buf.getvalue())


def rules(report, severity="error"):
    return {f.rule for f in report.findings if f.severity == severity}


@pytest.fixture(scope="module")
def sample_classification(reference):
    return parse_retour_classification((reference / "actes" / "samples" / "RetourClassification_example.xml").read_bytes())


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_valid_acte(fmt, tmp_path, collectivite):
    p = gen(tmp_path, collectivite=collectivite, metadata_format=fmt, n_annexes=1, objet="Désignation des délégués")
    r = validate_acte_zip(p, collectivite, today=TODAY)
    assert r.ok, r.to_text()
    assert r.kind == "acte_zip"
    s = r.summary
    assert (s["numero_interne"], s["nature"], s["objet"], s["date"], s["matiere"]) == (
        "DEL2025_014", "DE", "Désignation des délégués", "2025-03-14", "5.2")
    assert s["files"] == ["acte_DEL2025_014.pdf", "annexe_1.pdf"]
    assert s["idacte"] == "040-214002933-20250314-DEL2025_014-DE"
    assert "VALIDE" in r.to_text()


@pytest.mark.parametrize("defect,rule", [
    ("future_date", "ACTES-DATE-FUTURE"),
    ("bad_numero", "ACTES-NUMERO"),
    ("objet_newline", "ACTES-OBJET-RETOUR-LIGNE"),
    ("objet_too_long", "ACTES-OBJET-LONGUEUR"),
    ("objet_empty", "ACTES-OBJET-VIDE"),
    ("not_pdf", "ACTES-PDF-SIGNATURE"),
    ("broken_pdf", "ACTES-PDF-ILLISIBLE"),
    ("encrypted_pdf", "ACTES-PDF-CHIFFRE"),
    ("duplicate_names", "ACTES-NOMS-DOUBLONS"),
    ("unknown_matiere", "ACTES-MATIERE-INCONNUE"),
    ("bad_matiere", "ACTES-MATIERE-FORMAT"),
    ("bad_typologie", "ACTES-NATURE-TYPOLOGIE"),
    ("no_classification_date", "ACTES-CLASSIFICATION-DATE-ABSENTE"),
    ("missing_file", "ACTES-FICHIER-ABSENT"),
    ("unreferenced_file", "ACTES-FICHIER-NON-REFERENCE"),
    ("no_metadata", "ACTES-METADONNEES-ABSENTES"),
    ("xml_document", "ACTES-FORMAT"),
    ("zip_slip", "ARCHIVE-CHEMIN-REMONTANT"),
])
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_each_defect_is_caught(defect, rule, fmt, tmp_path, collectivite):
    today = None if defect == "future_date" else TODAY
    p = gen(tmp_path, collectivite=collectivite, metadata_format=fmt, n_annexes=1, defects=[defect],
            date_decision=None if defect == "future_date" else DECISION)
    r = validate_acte_zip(p, collectivite, today=today)
    assert not r.ok
    assert rule in rules(r), r.to_text()
    f = next(f for f in r.findings if f.rule == rule)
    assert f.message and f.fix and f.place  # French message, where, how to fix


def test_wrong_classification_date_needs_a_known_classification(tmp_path, sample_classification):
    p = gen(tmp_path, defects=["wrong_classification_date"], matiere="5.2")
    assert validate_acte_zip(p, today=TODAY).ok  # current date unknown: cannot judge
    r = validate_acte_zip(p, today=TODAY, classification=sample_classification)
    assert "ACTES-CLASSIFICATION-DATE" in rules(r)
    assert "2017-11-13" in next(f.fix for f in r.findings if f.rule == "ACTES-CLASSIFICATION-DATE")


def test_classification_date_taken_from_classification(tmp_path, sample_classification):
    p = gen(tmp_path, classification_date=None, matiere="5.2")
    assert "ACTES-CLASSIFICATION-DATE-ABSENTE" in rules(validate_acte_zip(p, today=TODAY))
    r = validate_acte_zip(p, today=TODAY, classification=sample_classification)
    assert r.ok, r.to_text()
    assert r.summary["classification_date"] == "2017-11-13"
    p2 = gen(tmp_path, classification_date=date(2017, 11, 13), matiere="5.2")
    assert validate_acte_zip(p2, today=TODAY, classification=sample_classification).ok


def test_matiere_levels(tmp_path, sample_classification):
    deep = gen(tmp_path, matiere="7.10.2", classification_date=date(2017, 11, 13))
    national = validate_acte_zip(deep, today=TODAY)
    assert national.ok and "ACTES-MATIERE-NON-VERIFIEE" in rules(national, "warning")
    r = validate_acte_zip(deep, today=TODAY, classification=sample_classification)
    assert "ACTES-MATIERE-INCONNUE" in rules(r)  # the sample stops at level 2
    ok = gen(tmp_path, matiere="7.10", classification_date=date(2017, 11, 13))
    assert validate_acte_zip(ok, today=TODAY, classification=sample_classification).ok


@pytest.mark.parametrize("nature,typo,national_ok,sample_ok", [
    ("DE", "99_DE", True, True),
    ("DE", "12_AD", False, True),   # allowed for DE by the préfecture's classification only
    ("DE", "99_AI", False, False),
    ("AR", "99_AT", True, True),
    ("AR", "99_AR", True, False),   # not in the sample classification
    ("CC", "99_CO", True, True),
    ("BF", "99_BU", True, True),
    ("AU", "99_DE", False, False),
])
def test_nature_typologie(nature, typo, national_ok, sample_ok, tmp_path, sample_classification):
    p = gen(tmp_path, nature=nature, typologie=typo, classification_date=date(2017, 11, 13))
    assert ("ACTES-NATURE-TYPOLOGIE" not in rules(validate_acte_zip(p, today=TODAY))) is national_ok
    assert ("ACTES-NATURE-TYPOLOGIE" not in rules(
        validate_acte_zip(p, today=TODAY, classification=sample_classification))) is sample_ok


def test_annex_typologies(tmp_path, sample_classification):
    p = gen(tmp_path, n_annexes=1, annex_typologie="22_PN", classification_date=date(2017, 11, 13))
    national = validate_acte_zip(p, today=TODAY)
    assert national.ok and "ACTES-CLASSIFICATION-NATIONALE" in rules(national, "warning")
    assert "ACTES-TYPOLOGIE-ANNEXE" in rules(validate_acte_zip(p, today=TODAY, classification=sample_classification))
    bad = zip_json(tmp_path, {"annexes": [{"fichier": "a.pdf", "typologie": "annexe"}]},
                   {"acte.pdf": minimal_pdf("a"), "a.pdf": minimal_pdf("b")})
    assert "ACTES-TYPOLOGIE-ANNEXE" in rules(validate_acte_zip(bad, today=TODAY))


@pytest.mark.parametrize("numero,ok", [
    ("A", True), ("1", True), ("DEL_2025_14", True), ("A" * 15, True), ("A_B", True),
    ("_A", False), ("A_", False), ("a1", False), ("A-1", False), ("A" * 16, False), ("A B", False),
    ("É1", False), ("_", False),
])
def test_numero_pattern(numero, ok, tmp_path):
    p = zip_json(tmp_path, {"numero_interne": numero}, {"acte.pdf": minimal_pdf("x")})
    assert ("ACTES-NUMERO" not in rules(validate_acte_zip(p, today=TODAY))) is ok


def test_numero_unique(tmp_path):
    p = gen(tmp_path)
    r = validate_acte_zip(p, today=TODAY, known_numeros={"DEL2025_013", "DEL2025_014"})
    assert rules(r) == {"ACTES-NUMERO-DOUBLON"}
    assert validate_acte_zip(p, today=TODAY, known_numeros={"DEL2025_013"}).ok


def test_decision_date_today_is_fine(tmp_path):
    p = gen(tmp_path)
    assert validate_acte_zip(p, today=DECISION).ok
    assert "ACTES-DATE-FUTURE" in rules(validate_acte_zip(p, today=date(2025, 3, 13)))


@pytest.mark.parametrize("length,ok", [(499, True), (500, False)])
def test_objet_length(length, ok, tmp_path):
    p = zip_json(tmp_path, {"objet": "é" * length}, {"acte.pdf": minimal_pdf("x")})
    assert validate_acte_zip(p, today=TODAY).ok is ok


def test_objet_outside_latin1_is_a_warning(tmp_path):
    p = zip_json(tmp_path, {"objet": "Délibération d’approbation – 2025"}, {"acte.pdf": minimal_pdf("x")})
    r = validate_acte_zip(p, today=TODAY)
    assert r.ok and "ACTES-OBJET-CARACTERES" in rules(r, "warning")


def test_sixteen_char_numero_also_fails_the_schema(tmp_path):
    p = zip_json(tmp_path, {"numero_interne": "A" * 16}, {"acte.pdf": minimal_pdf("x")})
    r = validate_acte_zip(p, today=TODAY)
    assert {"ACTES-NUMERO", "XSD"} <= rules(r)
    assert any(f.layer == "xsd" for f in r.findings)


def test_budget_xml(tmp_path):
    from flows.actes.budget import generate_budget

    ok = zip_json(tmp_path, {"nature": "BF", "matiere": "7.1", "document": "budget.xml"},
                  {"budget.xml": generate_budget(siret="21400293300015", exer=TODAY.year, sealed=True)})
    assert validate_acte_zip(ok, today=TODAY).ok
    broken = zip_json(tmp_path, {"nature": "BF", "matiere": "7.1", "document": "budget.xml"},
                      {"budget.xml": b"<DocumentBudgetaire>"})
    assert "ACTES-XML-ILLISIBLE" in rules(validate_acte_zip(broken, today=TODAY))


def test_other_formats_refused(tmp_path):
    p = zip_json(tmp_path, {"document": "acte.docx"}, {"acte.docx": b"PK\x03\x04 word"})
    assert "ACTES-FORMAT" in rules(validate_acte_zip(p, today=TODAY))


def test_same_file_cited_twice(tmp_path):
    p = zip_json(tmp_path, {"annexes": ["acte.pdf"]}, {"acte.pdf": minimal_pdf("x")})
    assert "ACTES-NOMS-DOUBLONS" in rules(validate_acte_zip(p, today=TODAY))


def test_size_cap(tmp_path):
    p = gen(tmp_path, n_annexes=3)
    r = validate_acte_zip(p, today=TODAY, max_total_bytes=1000)
    assert rules(r) == {"ACTES-TAILLE"}


def test_unreadable_path(tmp_path):
    r = validate_acte_zip(tmp_path / "absent.zip")
    assert not r.ok and r.findings[0].rule == "ACTES-FICHIER"


def test_report_is_french_text_and_json(tmp_path):
    p = gen(tmp_path, defects=["future_date"], date_decision=None)
    r = validate_acte_zip(p)
    text = r.to_text()
    assert "REFUSÉ" in text and "Correction" in text and "futur" in text
    assert json.loads(r.to_json())["findings"][0]["rule"] == "ACTES-DATE-FUTURE"
