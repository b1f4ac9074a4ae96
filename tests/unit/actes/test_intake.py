"""Reading the agent's ZIP: XML or JSON metadata, file resolution, typologies, structural errors."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date

import pytest

from flows.actes.generate import DEMO_CLASSIFICATION_DATE, acte_metadata_xml, generate_acte_zip
from flows.actes.intake import SubmissionError, read_submission
from flows.actes.pdf import minimal_pdf

PDF = minimal_pdf("Acte")


def zip_of(tmp_path, members, name="depot.zip"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members:
            zf.writestr(n, d)
    p = tmp_path / name
    p.write_bytes(buf.getvalue())
    return p


def meta_json(**over) -> bytes:
    obj = {"nature": "DE", "matiere": "7.10.2", "numero_interne": "DEL2025_014", "objet": "Vote des taux",
           "date_decision": "2025-03-14", "document": "deliberation.pdf"}
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_generated_zip_read(fmt, tmp_path, collectivite):
    p = tmp_path / "a.zip"
    p.write_bytes(generate_acte_zip(collectivite=collectivite, numero="DEL2025_001", metadata_format=fmt,
                                    n_annexes=2, matiere="7.10.2", objet="Vote des taux", date_decision=date(2025, 3, 1)))
    sub = read_submission(p)
    md = sub.metadata
    assert (md.nature, md.matiere, md.numero_interne, md.objet) == ("DE", "7.10.2", "DEL2025_001", "Vote des taux")
    assert md.date_decision == date(2025, 3, 1) and md.classification_date == DEMO_CLASSIFICATION_DATE
    assert md.typologie == "99_DE" and md.annexes_typologies == ("99_DE", "99_DE")
    assert sub.document.name == "acte_DEL2025_001.pdf" and sub.document.data.startswith(b"%PDF-")
    assert [a.name for a in sub.annexes] == ["annexe_1.pdf", "annexe_2.pdf"]
    assert sub.metadata_format == fmt and sub.unreferenced == []


def test_json_typologies_and_defaults(tmp_path):
    p = zip_of(tmp_path, [("deliberation.pdf", PDF), ("plan.pdf", PDF), ("note.pdf", PDF),
                          ("acte.json", meta_json(typologie="12_AD", annexes=[{"fichier": "plan.pdf", "typologie": "22_PN"},
                                                                             "note.pdf"], nature=1))])
    sub = read_submission(p)
    assert sub.metadata.nature == "DE" and sub.metadata.typologie == "12_AD"
    assert [a.typologie for a in sub.annexes] == ["22_PN", "12_AD"]
    assert sub.metadata.classification_date is None


def test_any_xml_with_acte_root_and_typologie_prefix(tmp_path):
    xml = acte_metadata_xml("AI", "4.1", "ARR_12", "Nomination", date(2025, 1, 2), None,
                            "99_AI-arrete.pdf", ["22_AT-attestation.pdf"])
    p = zip_of(tmp_path, [("metadonnees_export.xml", xml), ("arrete.pdf", PDF), ("22_AT-attestation.pdf", PDF),
                          ("budget_annexe.xml", b"<budget/>")])
    sub = read_submission(p)
    assert sub.metadata_file == "metadonnees_export.xml"
    assert sub.metadata.nature == "AI" and sub.metadata.typologie == "99_AI"
    assert sub.document.name == "arrete.pdf"
    assert sub.annexes[0].name == "22_AT-attestation.pdf" and sub.annexes[0].typologie == "22_AT"
    assert sub.unreferenced == ["budget_annexe.xml"]  # an XML that is not an Acte is a plain file


def test_files_in_a_folder_are_found(tmp_path):
    p = zip_of(tmp_path, [("depot/deliberation.pdf", PDF), ("depot/acte.json", meta_json())])
    assert read_submission(p).document.name == "deliberation.pdf"


def test_budget_xml_document(tmp_path):
    p = zip_of(tmp_path, [("budget.xml", b"<DocumentBudgetaire/>"),
                          ("acte.json", meta_json(nature="BF", matiere="7.1", document="budget.xml"))])
    sub = read_submission(p)
    assert sub.metadata.typologie == "99_BU" and sub.document.extension == "xml"


@pytest.mark.parametrize("members,rule", [
    ([("deliberation.pdf", PDF)], "ACTES-METADONNEES-ABSENTES"),
    ([], "ACTES-ZIP-VIDE"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json()), ("acte.xml", acte_metadata_xml(
        "DE", "5.2", "X", "o", date(2025, 1, 1), None, "deliberation.pdf", []))], "ACTES-METADONNEES-MULTIPLES"),
    ([("acte.json", meta_json())], "ACTES-FICHIER-ABSENT"),
    ([("deliberation.pdf", PDF), ("acte.json", b"{nature: DE")], "ACTES-JSON"),
    ([("deliberation.pdf", PDF), ("acte.json", b"[1, 2]")], "ACTES-JSON"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(objets="typo"))], "ACTES-JSON-CHAMP"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(objet=None))], "ACTES-METADONNEES-INCOMPLETES"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(matiere=7.1))], "ACTES-JSON-TYPE"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(annexes="a.pdf"))], "ACTES-JSON-TYPE"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(annexes=[{"nom": "a.pdf"}]))], "ACTES-JSON-TYPE"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(annexes=[{"fichier": "a.pdf", "x": 1}]))], "ACTES-JSON-CHAMP"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(date_decision="14/03/2025"))], "ACTES-DATE-INVALIDE"),
    ([("deliberation.pdf", PDF), ("acte.json", meta_json(nature="XX"))], "ACTES-NATURE"),
    ([("a/deliberation.pdf", PDF), ("b/deliberation.pdf", PDF), ("acte.json", meta_json())], "ACTES-NOMS-DOUBLONS"),
    ([("deliberation.pdf", PDF), ("acte.json", "\ufeff{".encode() + b"\xff")], "ACTES-JSON"),
])
def test_structural_errors(members, rule, tmp_path):
    with pytest.raises(SubmissionError) as exc:
        read_submission(zip_of(tmp_path, members))
    assert exc.value.rule == rule
    assert str(exc.value)  # French message


def test_xml_metadata_missing_attributes(tmp_path):
    bad = (b"<actes:Acte xmlns:actes='http://www.interieur.gouv.fr/ACTES#v1.1-20040216' actes:Date='2025-01-01'>"
           b"<actes:Document><actes:NomFichier>a.pdf</actes:NomFichier></actes:Document></actes:Acte>")
    with pytest.raises(SubmissionError) as exc:
        read_submission(zip_of(tmp_path, [("a.pdf", PDF), ("acte.xml", bad)]))
    assert exc.value.rule == "ACTES-METADONNEES-INCOMPLETES" and "NumeroInterne" in str(exc.value)


def test_doctype_in_metadata_is_not_taken_as_acte(tmp_path):
    evil = (b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
            b"<actes:Acte xmlns:actes='http://www.interieur.gouv.fr/ACTES#v1.1-20040216'>&x;</actes:Acte>")
    with pytest.raises(SubmissionError) as exc:
        read_submission(zip_of(tmp_path, [("a.pdf", PDF), ("acte.xml", evil)]))
    # refused as what it is (issue 15): the DOCTYPE is named, not "no metadata"; nothing was read
    assert exc.value.rule == "XML-DANGEREUX" and "acte.xml" in str(exc.value) and "root:" not in str(exc.value)


def test_bytes_accepted():
    sub = read_submission(generate_acte_zip(numero="N1", metadata_format="json"))
    assert sub.metadata.numero_interne == "N1"


def test_same_file_twice_is_recorded(tmp_path):
    p = zip_of(tmp_path, [("deliberation.pdf", PDF), ("acte.json", meta_json(annexes=["deliberation.pdf"]))])
    assert read_submission(p).duplicate_references == ["deliberation.pdf"]


def test_xml_metadata_with_skipped_matiere_level(tmp_path):
    xml = acte_metadata_xml("DE", "1.1.1.1", "N1", "o", date(2025, 1, 1), None, "a.pdf", [])
    xml = xml.replace(b"CodeMatiere4", b"CodeMatiere5")
    with pytest.raises(SubmissionError) as exc:
        read_submission(zip_of(tmp_path, [("a.pdf", PDF), ("acte.xml", xml)]))
    assert exc.value.rule == "ACTES-MATIERE-FORMAT"
