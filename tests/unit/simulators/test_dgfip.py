"""The DGFiP simulator judges PES files on its own: official schema, its own signature verifier and
trust store, its own referential and tiers rules, what it integrated before; its PES_ACQUIT has the
official shape and codes, and demat's parser reads the refusal down to the bordereau, pièce, ligne."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from flows.helios.acquit import parse_acquit
from simulators import helios_rules
from simulators.counterparts import Counterpart, Settings
from simulators.dgfip import build_acquit, dgfip_rules
from tests.unit.simulators.conftest import COLL, incoming, make_pes, sign, through

REGISTRY = [{**COLL}]


def judge(data: bytes, pki: dict | None = None, **extra):
    settings = {"trust_store": [pki["ca"]] if pki else [], **extra}
    decision = dgfip_rules(incoming("PES.xml", data, extra=settings))
    (reply,) = decision.replies
    assert reply.name == "ACQUIT_PES.xml"
    return reply.data, decision


def elements(acquit: bytes) -> list[dict]:
    root = etree.fromstring(acquit)
    out = []
    for el in root.iter("ElementACQUIT"):
        out.append({
            "domaine": el.find("DomaineAck").get("V"), "etat": el.find("EtatAck").get("V"),
            "numbord": el.find("NumBord").get("V") if el.find("NumBord") is not None else None,
            "codes": [e.get("V") for e in el.iter("NumAnoAck")],
            "lignes": [(dl.getparent().find("NumPiece").get("V"), dl.find("NumLigne").get("V"))
                       for dl in el.iter("DetailLigne")],
        })
    return out


@pytest.fixture(scope="module")
def official_acquit(reference):
    from flows import xmlsafe

    return xmlsafe.schema_from_file(
        reference / "helios" / "schemas" / "schemas_pes_v5.30" / "PES_V2" / "Rev0" / "PES_V2_Acquit_Autonome_V2.xsd")


def assert_official(schema, acquit: bytes) -> None:
    assert schema.validate(etree.fromstring(acquit)), schema.error_log


def test_signed_pes_is_accepted_with_one_signature_element_per_bordereau(pki, official_acquit):
    acquit, decision = judge(sign(pki, make_pes(n_bordereaux=2)), pki)
    assert decision.outcome.startswith("PES_ACQUIT accepté"), decision.outcome
    assert_official(official_acquit, acquit)
    els = elements(acquit)
    assert [(e["domaine"], e["etat"]) for e in els if e["domaine"] in "35"] == [("3", "1"), ("5", "1"), ("3", "1"), ("5", "1")]
    assert parse_acquit(acquit).accepted


def test_bordereau_altered_after_signing_is_refused_signature_invalide(pki, official_acquit):
    signed = sign(pki, make_pes(n_bordereaux=2))
    altered = signed.replace(b"Location de mat", b"Locution de mat", 1)
    assert altered != signed
    acquit, decision = judge(altered, pki)
    assert_official(official_acquit, acquit)
    els = elements(acquit)
    sig = [e for e in els if e["domaine"] == "3"]
    assert [e["etat"] for e in sig] == ["0", "1"]  # only the altered bordereau
    assert sig[0]["codes"] == ["ERREUR_SIGNATURE_BORDEREAU_INVALIDE"]
    a = parse_acquit(acquit)
    assert not a.accepted
    assert "signature du bordereau" in a.summary_fr and "bordereau 1" in a.summary_fr
    assert "modifié après la signature" in a.summary_fr, a.summary_fr


def test_garbage_signature_value_is_refused(pki):
    signed = sign(pki, make_pes())
    garbage = re.sub(rb"(<ds:SignatureValue[^>]*>)[^<]+", rb"\1QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", signed, count=1)
    acquit, _ = judge(garbage, pki)
    sig = [e for e in elements(acquit) if e["domaine"] == "3"]
    assert sig[0]["etat"] == "0" and sig[0]["codes"][0].startswith("ERREUR_SIGNATURE_BORDEREAU")


def test_signature_element_without_content_is_refused(pki):
    """The project XSD never looked inside ds:Signature: the DGFiP must not take it as a signature."""
    pes = make_pes().replace(b"</BlocBordereau>", b"</BlocBordereau>", 1)
    fake = re.sub(rb"(</Piece>\s*)(</Bordereau>)", rb"\1<ds:Signature>garbage</ds:Signature>\2", pes, count=1)
    assert b"<ds:Signature>garbage" in fake
    acquit, decision = judge(fake, pki)
    assert not parse_acquit(acquit).accepted, decision.outcome


def test_certificate_of_another_ca_is_refused(pki, stranger_pki):
    acquit, _ = judge(sign(stranger_pki, make_pes()), pki)
    sig = [e for e in elements(acquit) if e["domaine"] == "3"]
    assert sig[0]["codes"] == ["ERREUR_CERTIFICAT"]
    assert "autorité de confiance" in parse_acquit(acquit).summary_fr


def test_without_a_trust_store_every_signature_is_refused(pki):
    acquit, _ = judge(sign(pki, make_pes()), None)
    assert "ERREUR_CERTIFICAT" in elements(acquit)[0]["codes"]


def test_demat_file_without_signature_is_refused():
    acquit, _ = judge(make_pes(defects=("infodemat_unsigned",)))
    assert any("ERREUR_PES_SIGNATURE" in e["codes"] for e in elements(acquit))


def test_third_party_signature_is_intact_but_its_certificate_refused(reference):
    """A real PES signed by another product (Pastell fixture, rsa-sha1, policy 1.4): the digests and
    the signature value hold; only its certificate (expired, unknown CA) is refused."""
    data = (reference / "helios" / "samples" / "PESALR2_49101169800000_171227_2045.xml").read_bytes()
    j = helios_rules.judge(data, trust=helios_rules.xmlsig.TrustStore())
    codes = {e.code for b in j.bordereaux for e in b.signature}
    assert codes == {"ERREUR_CERTIFICAT"}, [e.libelle for b in j.bordereaux for e in b.signature]


def test_tiers_fault_is_placed_on_its_piece_and_ligne(official_acquit):
    acquit, _ = judge(make_pes(defects=("bad_iban",)))
    assert_official(official_acquit, acquit)
    refused = [e for e in elements(acquit) if e["etat"] == "0"]
    assert refused and refused[0]["domaine"] == "5" and refused[0]["lignes"]
    a = parse_acquit(acquit)
    assert "IBAN" in a.summary_fr and "ligne" in a.summary_fr


@pytest.mark.parametrize(("defect", "code"), [
    ("bad_cp", "ERREUR_AUTRE"), ("lowercase_iban", "ERREUR_AUTRE"), ("bad_siret_tiers", "ERREUR_AUTRE"),
    ("civilite_on_company", "ERREUR_AUTRE"), ("missing_civilite", "ERREUR_AUTRE"),
    ("nbrpce_mismatch", "ERREUR_AUTRE"), ("mtbordht_mismatch", "ERREUR_CUMUL_MONTANTS"),
    ("duplicate_idbord", "ERREUR_DOUBLON_BORDEREAU"), ("duplicate_pj", "ERREUR_DOUBLON_PJ"),
    ("bad_idcoll", "ERREUR_SIRET"), ("wrong_order", "ERREUR_SCHEMA_INCOMPLET"),
    ("doctype", "ERREUR_SCHEMA_INCOMPLET"), ("missing_element", "ERREUR_SCHEMA_INCOMPLET"),
])
def test_each_rule_refuses_with_its_code(defect, code):
    acquit, decision = judge(make_pes(defects=(defect,)))
    codes = [c for e in elements(acquit) for c in e["codes"]]
    assert code in codes, (defect, decision.outcome)
    assert not parse_acquit(acquit).accepted


def test_budget_not_open_in_helios_refuses_the_whole_flux():
    acquit, _ = judge(make_pes(codbud="02"), collectivites=REGISTRY)
    (el,) = elements(acquit)
    assert el["domaine"] == "0" and el["codes"] == ["ERREUR_CODE_COLLECTIVITE_BUDGET"]
    assert "CodBud 02" in parse_acquit(acquit).summary_fr
    acquit, _ = judge(make_pes(), collectivites=REGISTRY)
    assert parse_acquit(acquit).accepted


def test_garbage_and_hostile_input_gets_a_refusal_not_a_crash(official_acquit):
    for data in (b"", b"<not-xml", b"\x00\xff" * 100, b"<?xml version='1.0'?><PES_Aller/>"):
        acquit, _ = judge(data)
        assert_official(official_acquit, acquit)
        assert elements(acquit)[0]["domaine"] == "0" and elements(acquit)[0]["etat"] == "0"


def test_bordereau_integrated_earlier_is_refused_in_a_later_file(tmp_path):
    """State: Hélios remembers the bordereaux it integrated (per collectivité, budget, exercice)."""
    cp = Counterpart("dgfip", tmp_path / "dgfip", dgfip_rules, Settings())
    try:
        first = through(cp, "A.xml", make_pes("PES_A"))
        second = through(cp, "B.xml", make_pes("PES_B"))  # another NomFic, the same bordereau 1
        third = through(cp, "C.xml", make_pes("PES_A", seed=3))  # the NomFic of an integrated file
    finally:
        cp.close()
    assert parse_acquit(first["ACQUIT_A.xml"]).accepted
    assert "ERREUR_DOUBLON_BORDEREAU" in [c for e in elements(second["ACQUIT_B.xml"]) for c in e["codes"]]
    assert "déjà intégré" in parse_acquit(second["ACQUIT_B.xml"]).summary_fr
    assert "ERREUR_PES_PARAM" in [c for e in elements(third["ACQUIT_C.xml"]) for c in e["codes"]]


def test_acquit_of_a_judgement_with_nothing_is_still_valid(official_acquit):
    assert_official(official_acquit, build_acquit(helios_rules.Judgement()))


def test_with_the_project_schema_alone_the_dgfip_judges_the_same(monkeypatch, tmp_path, pki):
    from simulators import reference as simref

    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(tmp_path / "absent"))
    assert not simref.locate("pes").official
    assert parse_acquit(judge(sign(pki, make_pes()), pki)[0]).accepted
    acquit, _ = judge(make_pes(defects=("wrong_order",)))
    assert "ERREUR_SCHEMA_INCOMPLET" in elements(acquit)[0]["codes"]
