"""Reading the ministère's messages (reference samples) and the préfecture simulator's builders."""

from __future__ import annotations

from datetime import date

import pytest

from flows.actes import messages as M
from flows.actes import naming
from flows.actes.messages import MessageError, parse_message, read_archive
from flows.actes.transmission import build_transmission

from .conftest import DAY, official_errors
from .corpus import CDATE, IDACTE, submission


def test_sample_acte(samples):
    m = parse_message((samples / "034-491011698-20171207-CL20171227_06-DE-1-1_0.xml").read_bytes(),
                      "034-491011698-20171207-CL20171227_06-DE-1-1_0.xml")
    assert (m.kind, m.code, m.idacte) == ("Acte", "1-1", "034-491011698-20171207-CL20171227_06-DE")
    assert m.acte.nature == "DE" and m.acte.matiere == "3.2" and m.acte.numero_interne == "CL20171227_06"
    assert m.acte.objet == "Fichier signé parapheur"
    assert m.acte.classification_date == date(2017, 11, 13)
    assert m.acte.typologie == "32_DP"
    assert m.schema_errors == []


def test_sample_aracte(samples):
    m = parse_message((samples / "034-491011698-20171207-CL20171227_06-DE-1-2.xml").read_bytes())
    assert (m.kind, m.code) == ("ARActe", "1-2")
    assert m.idacte == "034-491011698-20171207-CL20171227_06-DE"
    assert m.date == date(2017, 12, 27)
    assert m.classification_date == date(2017, 11, 13)
    assert m.acte.objet == "Fichier signé parapheur"  # &#xE9; read as é
    assert m.acte.date_decision == date(2017, 12, 7)
    assert "accusé réception" in m.summary_fr and "27/12/2017" in m.summary_fr and "Rien à faire" in m.summary_fr


def test_sample_anomalie_acte(samples):
    name = "044-214400152----1-3_1.xml"
    m = parse_message((samples / name).read_bytes(), name)
    assert (m.kind, m.code, m.nature) == ("AnomalieActe", "1-3", "002")
    assert m.date == date(2018, 10, 12)
    assert "pas à jour" in m.nature_label
    assert m.detail.startswith("ODT-VERIF-01")
    assert m.classification_date == date(2018, 10, 10)
    assert m.acte.numero_interne == "123456" and m.acte.classification_date == date(2017, 4, 19)
    assert m.acte.matiere == "1.1.1"  # CodeMatiere4 is skipped in the sample: levels kept up to the gap
    assert m.acte_documents == ["99_DE-044-214400152-20181012-123456-DE-1-1_1.pdf",
                                "01_01-044-214400152-20181012-123456-DE-1-1_2.xml"]
    # no IDActe in an AnomalieActe: taken from the names of the transmitted files
    assert m.idacte == "044-214400152-20181012-123456-DE"
    assert m.extra["idacte_source"] == "noms des fichiers transmis"
    assert "REFUSÉ" in m.summary_fr and "10/10/2018" in m.summary_fr and "classification" in m.summary_fr
    assert "n'est PAS transmis" in m.summary_fr


def test_sample_ar_annulation(samples):
    m = parse_message((samples / "044-214400152-20181106-TEST_DGCL_4-DE-6-2_10.xml").read_bytes())
    assert (m.kind, m.code, m.idacte, m.date) == ("ARAnnulation", "6-2", "044-214400152-20181106-TEST_DGCL_4-DE",
                                                  date(2018, 11, 28))
    assert "annulation" in m.summary_fr


def test_sample_enveloppe_misillcl(samples):
    m = parse_message((samples / "EACT--SPREF0441-214400152-20181012-9.xml").read_bytes())
    assert m.kind == "EnveloppeMISILLCL"
    assert (m.siren, m.departement, m.arrondissement) == ("214400152", "044", "1")
    assert m.documents == ["044-214400152----1-3_1.xml"]
    assert m.extra["referent"]["Nom"] == "Demat SICTIAM"
    assert naming.PREF_ENVELOPE_RE.match("EACT--SPREF0441-214400152-20181012-9.xml")


def test_sample_retour_classification(samples):
    m = parse_message((samples / "RetourClassification_example.xml").read_bytes())
    assert (m.kind, m.code, m.date) == ("RetourClassification", "7-2", date(2017, 11, 13))
    assert m.extra["classification"].has_matiere("7.10")


def test_sample_courrier_simple_archive(samples):
    archive = read_archive((samples / "courrier_simple.tar.gz").read_bytes(), "courrier_simple.tar.gz")
    assert archive.envelope_name == "TACT--SPREF0011-862614864-20150805-7.xml"
    assert archive.envelope.siren == "862614864"
    assert [m.name for m in archive.messages] == ["001-862614864-20150805-20150805B-AI-2-1_0.xml"]
    m = archive.message("001-862614864-20150805-20150805B-AI-2-1_0.xml")
    assert m.data.startswith(b"<?xml") and parse_message(m.data).idacte == m.idacte
    assert (m.kind, m.code, m.idacte, m.date) == ("CourrierSimple", "2-1", "001-862614864-20150805-20150805B-AI",
                                                  date(2015, 8, 5))
    assert m.documents == ["001-862614864-20150805-20150805B-AI-2-1_1.pdf"]
    assert archive.documents["001-862614864-20150805-20150805B-AI-2-1_1.pdf"].startswith(b"%PDF")
    assert archive.problems == []
    assert "courrier simple" in m.summary_fr and "2-2" in m.summary_fr
    assert naming.PREF_ENVELOPE_RE.match(archive.envelope_name)


def test_parse_refuses_non_actes():
    with pytest.raises(MessageError, match="pas un message @ctes"):
        parse_message(b"<PES_Aller/>")
    with pytest.raises(MessageError):
        parse_message(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>")
    with pytest.raises(MessageError, match="illisible"):
        parse_message(b"<actes:Acte xmlns:actes='http://www.interieur.gouv.fr/ACTES#v1.1-20040216'>")
    with pytest.raises(MessageError, match="inconnu"):
        parse_message(b"<a:Foo xmlns:a='http://www.interieur.gouv.fr/ACTES#v1.1-20040216'/>")


def test_parse_reports_schema_errors_without_failing():
    m = parse_message(b"<a:ARAnnulation xmlns:a='http://www.interieur.gouv.fr/ACTES#v1.1-20040216' a:IDActe='x'/>")
    assert m.kind == "ARAnnulation" and m.schema_errors


# ---- round trips: built by the simulator, read by the platform


def _acte(collectivite):
    return build_transmission(submission(), collectivite, serial=1, day=DAY)


def test_aracte_round_trip(collectivite, official_schema):
    t = _acte(collectivite)
    pm = M.build_aracte(t.idacte, DAY, CDATE, acte_message=t.message_xml)
    assert official_errors(official_schema, pm.xml) == []
    assert pm.name == f"{t.idacte}-1-2_0.xml"
    m = parse_message(pm.xml, pm.name)
    sent = parse_message(t.message_xml, t.message_name)
    assert m.idacte == t.idacte and m.date == DAY and m.classification_date == CDATE
    assert m.acte == sent.acte  # ActeRecu echoes the Acte exactly
    assert m.acte.objet == submission().metadata.objet
    assert "Attention" not in m.summary_fr


def test_aracte_notices_new_classification(collectivite):
    t = _acte(collectivite)
    m = parse_message(M.build_aracte(t.idacte, DAY, date(2025, 1, 1), acte_message=t.message_xml).xml)
    assert "classification de la préfecture a changé" in m.summary_fr


def test_anomalie_acte_round_trip(collectivite, official_schema):
    t = _acte(collectivite)
    pm = M.build_anomalie_acte(t.idacte, "002", "Classification périmée", acte_message=t.message_xml, date=DAY,
                               classification_date=date(2025, 2, 1))
    assert official_errors(official_schema, pm.xml) == []
    m = parse_message(pm.xml, pm.name)
    assert (m.kind, m.nature, m.detail, m.date) == ("AnomalieActe", "002", "Classification périmée", DAY)
    assert m.idacte == t.idacte
    assert parse_message(pm.xml).idacte == t.idacte  # without the file name too (from ActeRecu's files)
    assert "01/02/2025" in m.summary_fr
    other = parse_message(M.build_anomalie_acte(t.idacte, "017", "Objet illisible", acte_message=t.message_xml).xml)
    assert "017" in other.summary_fr and "corriger" in other.summary_fr
    with pytest.raises(ValueError):
        M.build_anomalie_acte(t.idacte, "2", "")


def test_anomalie_enveloppe_round_trip(collectivite, official_schema):
    t = _acte(collectivite)
    pm = M.build_anomalie_enveloppe(t.envelope_xml, "003", "fichier manquant", date=DAY, envelope_name=t.envelope_name)
    assert pm.name == f"ANO_{t.envelope_name}"
    assert official_errors(official_schema, pm.xml) == []
    m = parse_message(pm.xml)
    assert (m.kind, m.nature, m.siren) == ("AnomalieEnveloppe", "003", collectivite.siren)
    assert m.extra["formulaires_recus"] == [t.message_name]
    assert m.idacte == t.idacte and m.extra["idactes"] == [t.idacte]  # the actes of the refused envelope
    assert "REFUSÉ" in m.summary_fr
    # a nature outside the official list is kept (our schema accepts it; see test_xsd_conformance)
    m2 = parse_message(M.build_anomalie_enveloppe(t.envelope_xml, "042").xml)
    assert m2.nature == "042" and m2.schema_errors == [] and "non documenté" in m2.nature_label


@pytest.mark.parametrize("code,kind,field,text", [
    ("2-1", "CourrierSimple", None, "courrier simple"),
    ("3-1", "DemandePieceComplementaire", "description", "pièces complémentaires"),
    ("4-1", "LettreObservations", "motif", "lettre d'observations"),
    ("5-1", "DefereTA", "nature_illegalite", "tribunal administratif"),
])
def test_courriers_round_trip(code, kind, field, text, official_schema):
    kw = {field: "Texte libre du préfet"} if field else {}
    pm = M.build_courrier(code, IDACTE, date=DAY, **kw)
    assert pm.kind == kind and pm.name == f"{IDACTE}-{code}_0.xml"
    assert official_errors(official_schema, pm.xml) == []
    m = parse_message(pm.xml, pm.name)
    assert (m.kind, m.code, m.idacte, m.date) == (kind, code, IDACTE, DAY)
    assert m.documents == list(pm.documents) == [f"{IDACTE}-{code}_1.pdf"]
    if field:
        assert m.detail == "Texte libre du préfet"
    assert text in m.summary_fr


@pytest.mark.parametrize("answer,ar_kind", [("3-3", "ARPieceComplementaire"), ("3-4", "ARPieceComplementaire"),
                                            ("4-3", "ARReponseRejetLettreObservations"),
                                            ("4-4", "ARReponseRejetLettreObservations"), ("6-1", "ARAnnulation")])
def test_ar_for_round_trip(answer, ar_kind, official_schema):
    pm = M.build_ar_for(answer, IDACTE, date(2025, 3, 1), date_reception=DAY)
    assert pm.kind == ar_kind
    assert official_errors(official_schema, pm.xml) == []
    m = parse_message(pm.xml)
    assert (m.kind, m.idacte, m.date) == (ar_kind, IDACTE, DAY)
    if ar_kind != "ARAnnulation":
        assert m.date_courrier_pref == date(2025, 3, 1)
    assert "Rien à faire" in m.summary_fr


def test_builders_refuse_bad_input():
    with pytest.raises(ValueError):
        M.build_courrier("1-1", IDACTE)
    with pytest.raises(ValueError):
        M.build_ar_for("2-2", IDACTE, DAY)
    with pytest.raises(ValueError):
        M.build_aracte("pas-un-idacte", DAY, DAY)


def test_response_archive_round_trip(collectivite, official_schema):
    t = _acte(collectivite)
    msgs = [M.build_aracte(t.idacte, DAY, CDATE, acte_message=t.message_xml),
            M.build_courrier("3-1", t.idacte, date=DAY, description="Plan de situation")]
    name, data = M.build_response_archive(msgs, 7, collectivite.siren, collectivite.departement,
                                          arrondissement=2, day=DAY)
    assert name == "EACT--SPREF0402-214002933-20250320-7.tar.gz"
    archive = read_archive(data, name)
    assert archive.envelope_name == "EACT--SPREF0402-214002933-20250320-7.xml"
    from flows.actes.safearchive import read_tar

    members = read_tar(data)
    assert list(members)[0] == archive.envelope_name
    for member, content in members.items():
        if member.endswith(".xml"):
            assert official_errors(official_schema, content) == [], member
    assert [m.kind for m in archive.messages] == ["ARActe", "DemandePieceComplementaire"]
    assert [m.data for m in archive.messages] == [msgs[0].xml, msgs[1].xml]
    assert list(archive.documents) == [f"{t.idacte}-3-1_1.pdf"]
    assert archive.problems == []
    assert archive.envelope.siren == collectivite.siren and archive.envelope.arrondissement == "2"


def test_archive_problems_are_reported(collectivite):
    from flows.actes.transmission import make_tar_gz

    env = M.build_envelope_misillcl("214002933", "040", 2, ["absent.xml"])
    data = make_tar_gz([("EACT--SPREF0402-214002933-20250320-1.xml", env), ("orphelin.pdf", b"%PDF-1.4")], DAY)
    archive = read_archive(data)
    assert any("absent.xml" in p for p in archive.problems)
    # a file no message cites is kept and noted (issue 15), not a problem
    assert not any("orphelin.pdf" in p for p in archive.problems)
    assert any("orphelin.pdf" in n for n in archive.notes) and "orphelin.pdf" in archive.documents
    no_env = read_archive(make_tar_gz([("x-2-1_0.xml", M.build_courrier("2-1", IDACTE).xml)], DAY))
    assert any("aucune enveloppe" in p for p in no_env.problems)
    assert [m.kind for m in no_env.messages] == ["CourrierSimple"]


def test_anomalie_acte_idacte_rebuilt_from_envelope(collectivite):
    """An AnomalieActe whose files carry no IDActe (foreign TdT naming): SIREN/département from the envelope."""
    t = _acte(collectivite)
    acte = t.message_xml.replace(f"99_DE-{t.idacte}-1-1_1.pdf".encode(), b"deliberation.pdf")
    acte = acte.replace(f"-{t.idacte}-1-1_".encode(), b"-annexe_")
    pm = M.build_anomalie_acte(t.idacte, "001", "x", acte_message=acte, date=DAY)
    assert parse_message(pm.xml).idacte == ""
    name, data = M.build_response_archive([("ano.xml", pm.xml)], 1, collectivite.siren, collectivite.departement,
                                          arrondissement=2, day=DAY)
    msg = read_archive(data).messages[0]
    assert msg.idacte == t.idacte and msg.extra["idacte_source"].startswith("reconstruit")


def test_archive_messages_list_and_mapping(collectivite):
    t = _acte(collectivite)
    pm = M.build_aracte(t.idacte, DAY, CDATE, acte_message=t.message_xml)
    _, data = M.build_response_archive([pm], 1, collectivite.siren, "040", day=DAY)
    msgs = read_archive(data).messages
    (only,) = list(msgs)
    assert only.kind == "ARActe" and only.data == pm.xml  # iteration: message objects
    assert msgs.keys() == [pm.name] and msgs[pm.name] is only and msgs[0] is only and pm.name in msgs
    assert list(msgs.values()) == [only] and msgs.items() == [(pm.name, only)] and msgs.get("x") is None
    with pytest.raises(KeyError):
        msgs["absent.xml"]
