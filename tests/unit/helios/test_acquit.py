"""PES_ACQUIT reading (every real sample), building (valid against the official XSD), PES_Retour."""

from __future__ import annotations

import pytest
from lxml import etree

from flows.findings import Finding, UnreadableFile
from flows.helios.acquit import build_acquit, parse_acquit, parse_retour
from flows.helios.validate import validate_pes

from .conftest import COLL, make_pes, parse, write

# ----------------------------------------------------------------------------- real samples


@pytest.mark.parametrize(
    ("name", "nomfic"),
    [
        ("PES_ACQUIT_ok.xml", "HELIOS_SIMU_ALR2_1477486132_1155762524.xml"),
        ("ACQUIT_PESALR2_49101169800000_171227_2045.xml", "HELIOS_SIMU_ALR2_1514384631_264491346.xml"),
    ],
)
def test_accepted_samples(samples, name, nomfic):
    a = parse_acquit((samples / name).read_bytes())
    assert a.accepted is True and a.nomfic == nomfic
    assert a.idcoll == "20004910400025"
    doms = [(e.domaine, e.domaine_fr) for e in a.elements]
    assert doms[0] == ("5", "dépense") and ("4", "pièce justificative") in doms
    assert a.elements[0].numbord == "1847" and a.elements[0].exercice == "2015"
    assert a.refusals == []
    assert "ACCEPTÉ" in a.summary_fr and nomfic in a.summary_fr


def test_refused_depense_sample_details_every_line(samples):
    a = parse_acquit((samples / "006111_190130123456-ACK-A3020100_A0000IDL_KO.xml").read_bytes())
    assert a.accepted is False
    assert a.nomfic == "PesDepense-02-2019-5-11112222333344445"
    (ko,) = a.refusals
    assert (ko.domaine, ko.domaine_fr, ko.numbord, ko.exercice) == ("5", "dépense", "5", "2019")
    assert [p.numpiece for p in ko.pieces] == ["20", "21", "22"]
    assert [ln.numligne for ln in ko.pieces[0].lignes] == ["1", "2", "3"]
    err = ko.pieces[1].lignes[1].erreurs[0]
    assert err.code == "ERREUR_AUTRE" and err.libelle.startswith("2559 - Le code service")
    s = a.summary_fr
    assert "REFUSÉ" in s and "Domaine dépense" in s and "bordereau 5 (exercice 2019)" in s
    assert "pièce 20 / ligne 1 : ERREUR_AUTRE — 1971 - Compte fonction présent à tort" in s
    assert "pièce 21 / ligne 2 : ERREUR_AUTRE — 2559" in s
    assert "PJ 2019EC00087654" in s  # the accepted PJ is listed too


def test_refused_recette_sample(samples):
    a = parse_acquit((samples / "006111_190130123456-ACK-A3020100_A0000SDP_KO.xml").read_bytes())
    assert a.accepted is False
    assert a.nomfic == "PesRecette-02-2018-258-258-20190129666666"
    assert len(a.elements) == 5 and len(a.refusals) == 2
    assert {e.domaine_fr for e in a.refusals} == {"recette"}
    assert [p.numpiece for e in a.refusals for p in e.pieces] == ["5432", "4321"]
    assert "pièce 5432 : ERREUR_AUTRE — 2559 - Le code service" in a.summary_fr
    assert a.codcol == "000"  # the sample's CodCol, refused by the official XSD, is still read


def test_retour_sample(samples):
    r = parse_retour((samples / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes())
    assert r["nomfic"] == "HELIOS_SIMU_RETOUR_1565181244_184723364.xml"
    assert r["idcoll"] == "12345678900012" and r["idpost"] == "082008" and r["codcol"] == "221"
    assert r["typfic"] == "PESRETOUR_DEP" and r["domaines"] == ["dépense"] and r["namespace_ok"]
    (b,) = r["bordereaux"]
    assert b["idbord"] == "1234567" and b["pieces"][0]["idpce"] == "832" and b["pieces"][0]["etat"] == "01"
    assert "12345678900012" in r["summary_fr"] and "CORBARIEU" in r["summary_fr"] and "1 pièce" in r["summary_fr"]


def test_not_an_acquit_or_hostile(samples):
    with pytest.raises(UnreadableFile):
        parse_acquit((samples / "PES_ex.xml").read_bytes())
    with pytest.raises(UnreadableFile):
        parse_acquit(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><n:PES_ACQUIT xmlns:n="x">&e;</n:PES_ACQUIT>')
    with pytest.raises(UnreadableFile):
        parse_acquit(b"<n:PES_ACQUIT")
    with pytest.raises(UnreadableFile):
        parse_retour((samples / "PES_ACQUIT_ok.xml").read_bytes())


def test_empty_acquit_is_not_an_acceptance():
    data = b"""<?xml version="1.0" encoding="ISO-8859-1"?><n:PES_ACQUIT xmlns:n="http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour/v2">
    <Enveloppe><Parametres><NomFic V="F"/></Parametres></Enveloppe><ACQUIT/></n:PES_ACQUIT>"""
    a = parse_acquit(data)
    assert a.accepted is False and "vide" in a.summary_fr


# ----------------------------------------------------------------------------- build_acquit


def _ack_for(tmp_path, defects=(), extra: list[Finding] = (), **kw) -> tuple[bytes, bytes]:
    pes = make_pes(defects=list(defects), n_bordereaux=kw.pop("n_bordereaux", 2), **kw)
    findings = validate_pes(write(tmp_path, pes)).findings + list(extra)
    return pes, build_acquit(pes, findings)


def test_accepted_round_trip(tmp_path, official_acquit):
    pes, ack = _ack_for(tmp_path)
    assert official_acquit.validate(parse(ack)), official_acquit.error_log
    assert ack.startswith(b"<?xml version='1.0' encoding='ISO-8859-1'?>")
    a = parse_acquit(ack)
    assert a.accepted is True and a.nomfic == "PES_TEST_0001"
    assert (a.idcoll, a.idpost, a.codcol, a.codbud) == (COLL["siret"], COLL["idpost"], COLL["codcol"], COLL["codbud"])
    assert [(e.domaine, e.numbord, e.exercice) for e in a.elements if e.domaine == "5"] == [("5", "1", "2026"), ("5", "2", "2026")]
    assert len([e for e in a.elements if e.domaine == "4"]) == 2


def test_warnings_do_not_refuse(tmp_path, official_acquit):
    _pes, ack = _ack_for(tmp_path, ["mtbordht_mismatch"])
    assert parse_acquit(ack).accepted is True


@pytest.mark.parametrize(
    ("defects", "domaine", "code"),
    [
        (["bad_idcoll"], "0", "ERREUR_SIRET"),
        (["utf8_declared_latin1"], "0", "ERREUR_ENCODING"),
        (["wrong_order"], "0", "ERREUR_SCHEMA_INCOMPLET"),
        (["missing_nomfic"], "0", "ERREUR_SCHEMA_INCOMPLET"),
        (["duplicate_idbord"], "5", "ERREUR_DOUBLON_BORDEREAU"),
        (["duplicate_pj"], "4", "ERREUR_DOUBLON_PJ"),
        (["pjref_dangling"], "5", "ERREUR_PJ"),
        (["nbrpce_mismatch"], "5", "ERREUR_AUTRE"),
        (["infodemat_unsigned"], "5", "ERREUR_PES_SIGNATURE"),
    ],
)
def test_refusals_carry_real_codes(tmp_path, official_acquit, defects, domaine, code):
    _pes, ack = _ack_for(tmp_path, defects)
    assert official_acquit.validate(parse(ack)), [e.message for e in official_acquit.error_log]
    a = parse_acquit(ack)
    assert a.accepted is False
    refused = [e for e in a.refusals if e.domaine == domaine]
    assert refused, a.summary_fr
    codes = {err.code for e in refused for err in e.erreurs} | {
        err.code for e in refused for p in e.pieces for err in p.erreurs + [x for ln in p.lignes for x in ln.erreurs]
    }
    assert code in codes, a.summary_fr
    libelles = [err.libelle for e in refused for err in e.erreurs]
    assert all(lib[:4].isdigit() and lib[4:7] == " - " for lib in libelles)


def test_recette_refusal_domain_6(tmp_path, official_acquit):
    _pes, ack = _ack_for(tmp_path, ["nbrpce_mismatch"], kind="recette")
    assert official_acquit.validate(parse(ack))
    (ko,) = parse_acquit(ack).refusals
    assert ko.domaine == "6" and ko.numbord == "1"


def test_only_the_faulty_bordereau_is_refused(tmp_path):
    _pes, ack = _ack_for(tmp_path, ["nbrpce_mismatch"], n_bordereaux=3)
    a = parse_acquit(ack)
    states = {e.numbord: e.accepted for e in a.elements if e.domaine == "5"}
    assert states == {"1": False, "2": True, "3": True}


def test_tiers_and_signature_findings_are_detailed(tmp_path, official_acquit):
    extra = [
        Finding("TIERS-CP", "Le code postal doit compter 5 chiffres.", place="bordereau 2 / pièce 3 / ligne 1 / tiers", value="4000"),
        Finding("SIGNATURE-INVALIDE", "Empreinte du bordereau incorrecte.", place="bordereau 1"),
    ]
    _pes, ack = _ack_for(tmp_path, extra=extra)
    assert official_acquit.validate(parse(ack)), [e.message for e in official_acquit.error_log]
    a = parse_acquit(ack)
    sig = [e for e in a.refusals if e.domaine == "3"]
    assert sig and sig[0].numbord == "1" and sig[0].erreurs[0].code == "ERREUR_SIGNATURE_BORDEREAU_INVALIDE"
    dep2 = next(e for e in a.refusals if e.domaine == "5" and e.numbord == "2")
    (piece,) = dep2.pieces
    assert piece.numpiece == "3" and piece.lignes[0].numligne == "1"
    assert "code postal" in piece.lignes[0].erreurs[0].libelle
    assert "pièce 3 / ligne 1" in a.summary_fr


def test_unparsable_pes_still_gets_a_valid_acquit(tmp_path, official_acquit):
    pes = make_pes()
    broken = pes[: len(pes) // 2]
    findings = validate_pes(write(tmp_path, broken)).findings
    ack = build_acquit(broken, findings)
    assert official_acquit.validate(parse(ack)), [e.message for e in official_acquit.error_log]
    a = parse_acquit(ack)
    assert a.accepted is False and a.nomfic == "PES_TEST_0001"
    assert a.elements[0].domaine == "0" and a.elements[0].erreurs[0].code == "ERREUR_SCHEMA_INCOMPLET"


def test_bad_header_values_are_sanitised(tmp_path, official_acquit):
    pes = make_pes().replace(b'<CodCol V="293"/>', b'<CodCol V="000"/>')
    ack = build_acquit(pes, validate_pes(write(tmp_path, pes)).findings)
    assert official_acquit.validate(etree.fromstring(ack))
    assert parse_acquit(ack).accepted is False  # CodCol 000 is refused by the schema


def test_signature_finding_named_by_bordereau_id(tmp_path, official_acquit):
    extra = [Finding("SIG-EMPREINTE", "Signature du bordereau altérée.", place="bordereau BORD2", layer="signature")]
    _pes, ack = _ack_for(tmp_path, extra=extra)
    assert official_acquit.validate(parse(ack))
    (sig,) = [e for e in parse_acquit(ack).refusals if e.domaine == "3"]
    assert sig.numbord == "2" and sig.erreurs[0].code == "ERREUR_SIGNATURE_BORDEREAU_INVALIDE"
