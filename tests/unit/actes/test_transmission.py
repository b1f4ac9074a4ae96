"""Transmissions to the ministère: names, archive content, ISO-8859-1, validity against the OFFICIAL schema."""

from __future__ import annotations

import re
from datetime import date

import pytest

from flows.actes import naming
from flows.actes import transmission as T
from flows.actes.classification import build_demande_classification, national_default
from flows.actes.generate import generate_acte_zip
from flows.actes.intake import read_submission
from flows.actes.messages import parse_message, read_archive
from flows.actes.pdf import minimal_pdf
from flows.actes.safearchive import read_tar

from .conftest import DAY, make_collectivite, official_errors
from .corpus import CDATE, IDACTE, submission

# Names of the reference samples (Pastell/STELA fixtures) that ours must follow
REFERENCE_ACTE_MESSAGE = "034-491011698-20171207-CL20171227_06-DE-1-1_0.xml"
REFERENCE_ACTE_FILE = "32_DP-034-491011698-20171207-CL20171227_06-DE-1-1_1.pdf"
REFERENCE_ANNEX = "01_01-044-214400152-20181012-123456-DE-1-1_2.xml"


def test_names_follow_reference_samples():
    assert naming.FILE_RE.match(REFERENCE_ACTE_MESSAGE) and naming.FILE_RE.match(REFERENCE_ACTE_FILE)
    parts = naming.parse_file_name(REFERENCE_ANNEX)
    assert (parts["typologie"], parts["idacte"], parts["code"], parts["n"]) == (
        "01_01", "044-214400152-20181012-123456-DE", "1-1", "2")
    assert naming.parse_file_name("044-214400152----1-3_1.xml")["code"] == "1-3"
    ar = naming.parse_file_name("034-491011698-20171207-CL20171227_06-DE-1-2.xml")  # no _n suffix
    assert (ar["code"], ar["n"], ar["idacte"]) == ("1-2", "", "034-491011698-20171207-CL20171227_06-DE")


def test_acte_transmission(collectivite, official_schema):
    t = T.build_transmission(submission(), collectivite, serial=12, day=DAY)
    assert t.idacte == "040-214002933-20250314-DEL2025_014-DE"  # decision date, not the sending day
    assert t.envelope_name == "EACT--214002933--20250320-12.xml"
    assert t.archive_name == "TDT-EACT--214002933--20250320-12.tar.gz"
    assert t.message_name == f"{t.idacte}-1-1_0.xml"
    assert list(t.files) == [f"99_DE-{t.idacte}-1-1_1.pdf", f"22_TA-{t.idacte}-1-1_2.pdf",
                             f"99_BU-{t.idacte}-1-1_3.xml"]
    for name in [t.message_name, *t.files]:
        assert naming.FILE_RE.match(name), name
    members = read_tar(t.archive_bytes)
    assert list(members) == [t.envelope_name, t.message_name, *t.files]
    assert members[t.message_name] == t.message_xml
    for name in (t.envelope_name, t.message_name):
        xml = members[name]
        assert xml.startswith(b"<?xml version='1.0' encoding='ISO-8859-1'?>")
        assert official_errors(official_schema, xml) == [], name
    assert "fiscalité".encode("latin-1") in t.message_xml  # real ISO-8859-1 bytes
    assert b"&#339;" in t.message_xml  # "œ" has no ISO-8859-1 code: character reference
    assert t.warnings == []


def test_acte_message_content(collectivite):
    t = T.build_transmission(submission(), collectivite, serial=1, day=DAY)
    m = parse_message(t.message_xml, t.message_name)
    assert m.idacte == t.idacte
    assert m.acte.matiere == "7.10.2" and m.acte.nature == "DE" and m.acte.classification_date == CDATE
    assert m.acte.objet == submission().metadata.objet
    assert m.acte_documents == list(t.files)
    env = parse_message(t.envelope_xml)
    assert (env.siren, env.departement, env.arrondissement, env.extra["nature_collectivite"]) == (
        "214002933", "040", "2", "31")
    assert env.emails == ["secretariat@saint-sever.fr"] and env.documents == [t.message_name]


def test_archive_round_trip(collectivite):
    t = T.build_transmission(submission(), collectivite, serial=1, day=DAY)
    archive = read_archive(t.archive_bytes, t.archive_name)
    assert archive.envelope.kind == "EnveloppeCLMISILL"
    assert [m.name for m in archive.messages] == [t.message_name]
    assert archive.messages[0].data == t.message_xml
    assert archive.documents == t.files
    assert archive.problems == []


def test_archive_is_deterministic(collectivite):
    a = T.build_transmission(submission(), collectivite, serial=1, day=DAY)
    b = T.build_transmission(submission(), collectivite, serial=1, day=DAY)
    assert a.archive_bytes == b.archive_bytes


def test_from_generated_zip(tmp_path, collectivite, official_schema):
    for fmt in ("xml", "json"):
        sub = read_submission(generate_acte_zip(collectivite=collectivite, numero="DEL2025_3", metadata_format=fmt,
                                                n_annexes=2, date_decision=date(2025, 3, 1)))
        t = T.build_transmission(sub, collectivite, serial=2, trigram="ABC", day=DAY)
        assert t.archive_name == "ABC-EACT--214002933--20250320-2.tar.gz"
        for name, xml in read_tar(t.archive_bytes).items():
            if name.endswith(".xml"):
                assert official_errors(official_schema, xml) == [], name


def test_classification_date_from_classification_or_error(collectivite):
    sub = submission(classification_date=None)
    with pytest.raises(ValueError, match="classification"):
        T.build_transmission(sub, collectivite, serial=1, day=DAY)
    with pytest.raises(ValueError, match="classification"):
        T.build_transmission(sub, collectivite, serial=1, day=DAY, classification=national_default())
    t = T.build_transmission(sub, collectivite, serial=1, day=DAY, classification=national_default(date(2024, 6, 1)))
    assert b"<actes:ClassificationDateVersion>2024-06-01<" in t.message_xml


def test_bad_return_email_is_replaced_with_a_warning(official_schema):
    col = make_collectivite(email="mairie@saint-sever.example")  # .example: 7 letters, refused by @ctes
    t = T.build_transmission(submission(), col, serial=1, day=DAY)
    assert t.warnings and "saint-sever.example" in t.warnings[0]
    assert official_errors(official_schema, t.envelope_xml) == []
    t2 = T.build_transmission(submission(), col, serial=1, day=DAY, email="actes@saint-sever.fr")
    assert t2.warnings == [] and b"actes@saint-sever.fr" in t2.envelope_xml


def test_refusals(collectivite):
    with pytest.raises(ValueError):
        T.build_transmission(submission(), collectivite, serial=0, day=DAY)
    with pytest.raises(ValueError, match="IDActe"):
        T.build_transmission(submission(numero_interne="DEL-1"), collectivite, serial=1, day=DAY)
    with pytest.raises(ValueError):
        T.build_annulation("pas-un-idacte", collectivite, serial=1)


def test_annulation(collectivite, official_schema):
    t = T.build_annulation(IDACTE, collectivite, serial=4, day=DAY)
    assert (t.kind, t.code, t.message_name) == ("Annulation", "6-1", f"{IDACTE}-6-1_0.xml")
    assert t.files == {}
    assert official_errors(official_schema, t.message_xml) == []
    assert parse_message(t.message_xml).idacte == IDACTE


PDF = ("reponse.pdf", minimal_pdf("Réponse de la commune"))


@pytest.mark.parametrize("builder,args,kind,code,n_docs", [
    (T.build_reponse_courrier_simple, (PDF,), "ReponseCourrierSimple", "2-2", 1),
    (T.build_ar_demande_pieces, (), "ARDemandePieceComplementaire", "3-2", 0),
    (T.build_refus_pieces, (PDF,), "RefusPieceComplementaire", "3-3", 1),
    (T.build_pieces_complementaires, ([PDF, ("plan.PDF", minimal_pdf("Plan"))],), "PieceComplementaire", "3-4", 2),
    (T.build_ar_lettre_observations, (), "ARLettreObservations", "4-2", 0),
    (T.build_rejet_lettre_observations, (PDF,), "RejetLettreObservations", "4-3", 1),
    (T.build_reponse_lettre_observations, (PDF,), "ReponseLettreObservations", "4-4", 1),
])
def test_answers(builder, args, kind, code, n_docs, collectivite, official_schema):
    t = builder(IDACTE, date(2025, 3, 18), collectivite, *args, serial=5, day=DAY)
    assert (t.kind, t.code) == (kind, code)
    assert t.message_name == f"{IDACTE}-{code}_0.xml"
    assert list(t.files) == [f"{IDACTE}-{code}_{i}.pdf" for i in range(1, n_docs + 1)]
    members = read_tar(t.archive_bytes)
    for name in (t.envelope_name, t.message_name):
        assert official_errors(official_schema, members[name]) == [], name
    m = parse_message(t.message_xml, t.message_name)
    assert (m.kind, m.idacte, m.date_courrier_pref) == (kind, IDACTE, date(2025, 3, 18))
    assert m.documents == list(t.files)


def test_answer_document_count_checked(collectivite):
    with pytest.raises(ValueError):
        T.build_answer("2-2", IDACTE, DAY, collectivite, documents=[], serial=1)
    with pytest.raises(ValueError):
        T.build_answer("3-2", IDACTE, DAY, collectivite, documents=[PDF], serial=1)
    with pytest.raises(ValueError):
        T.build_answer("3-4", IDACTE, DAY, collectivite, documents=[], serial=1)
    with pytest.raises(ValueError):
        T.build_answer("1-2", IDACTE, DAY, collectivite, serial=1)


def test_demande_classification(collectivite, official_schema):
    t = build_demande_classification(collectivite, CDATE, serial=3, day=DAY)
    assert t.message_name == "040-214002933----7-1_0.xml"
    assert (t.kind, t.code) == ("DemandeClassification", "7-1")
    members = read_tar(t.archive_bytes)
    assert list(members) == [t.envelope_name, t.message_name]
    for xml in members.values():
        assert official_errors(official_schema, xml) == []
    assert parse_message(t.message_xml).date == CDATE
    assert re.match(r"TDT-EACT--214002933--20250320-3\.tar\.gz", t.archive_name)
