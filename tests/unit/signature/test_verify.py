"""Verification: real field samples, tampering, moved signatures, certificates and trust."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.signature.verify import verify_pes
from flows.signature.xades import sign_pes

from .conftest import future, past
from .pesfactory import make_pes

SAMPLES = {
    "1.4": "PESALR2_49101169800000_171227_2045.xml",
    "1.7": "SHA256_bordereau.xml",
}


def _rules(result) -> set[str]:
    return {f.rule for f in result.findings}


@pytest.fixture(scope="module")
def signed(maire) -> bytes:
    return sign_pes(make_pes(3), *maire, role="Maire", place="Mont-de-Marsan")


@pytest.mark.parametrize("policy", ["1.4", "1.7"])
def test_real_samples_are_intact(reference, policy):
    data = (reference / "helios" / "samples" / SAMPLES[policy]).read_bytes()
    report = verify_pes(data, trust_store=[reference / "helios" / "signature" / "CA_RGS3.zip"])
    assert report.intact, report.to_text()
    (res,) = report.results
    assert res.policy == policy and res.role in {"Ordonnateur", "Administrateur"}
    assert res.signer and res.signing_time.year in (2017, 2018)
    # the test certificates (ADULLACT test CA) are not RGS: strict mode says so
    assert "SIG-CERT-CHAINE" in _rules(res)
    strict = verify_pes(data, trust_store=[reference / "helios" / "signature" / "CA_RGS3.zip"], strict=True)
    assert strict.intact and not strict.ok
    assert "CONFORME" in report.to_text() and "politique " + policy in report.to_text()


@pytest.mark.parametrize("policy", ["1.4", "1.7"])
@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'<MtBordHT V="75724.75"/>', b'<MtBordHT V="75724.76"/>'),
        (b'<Nom V="PAIERIE DEPART. HERAULT"/>', b'<Nom V="PAIERIE DEPART. HERAULX"/>'),
        (b'<IdPce V="832"/>', b'<IdPce V="833"/>'),
    ],
)
def test_real_samples_tampered_content(reference, policy, old, new):
    data = (reference / "helios" / "samples" / SAMPLES[policy]).read_bytes()
    if old not in data:
        old, new = re.search(rb'<MtBordHT V="[^"]*"/>', data).group(0), b'<MtBordHT V="1.00"/>'
    report = verify_pes(data.replace(old, new, 1))
    assert not report.intact and not report.ok
    assert "SIG-EMPREINTE" in _rules(report.results[0])


def test_real_sample_tampered_signed_properties(reference):
    data = (reference / "helios" / "samples" / SAMPLES["1.7"]).read_bytes()
    report = verify_pes(data.replace(b"<xad:ClaimedRole>Administrateur<", b"<xad:ClaimedRole>Maire<"))
    assert not report.intact and "SIG-EMPREINTE" in _rules(report.results[0])


def test_real_sample_tampered_signature_value(reference):
    data = (reference / "helios" / "samples" / SAMPLES["1.4"]).read_bytes()
    data = data.replace(b'_SV">VML7', b'_SV">VML8', 1)
    report = verify_pes(data)
    assert not report.intact and "SIG-VALEUR" in _rules(report.results[0])


def test_own_signatures_verify_strict(signed, pki):
    report = verify_pes(signed, trust_store=[pki["ca"]], strict=True)
    assert report.ok and report.intact, report.to_text()
    assert [r.signer for r in report.results] == ["Jeanne Dupré"] * 3
    assert all(r.findings == [] for r in report.results)
    assert "signature valide" in report.to_text()


def test_every_bordereau_checked_independently(signed, pki):
    tampered = signed.replace(b'<IdPce V="201"/>', b'<IdPce V="299"/>')
    report = verify_pes(tampered, trust_store=[pki["ca"]])
    assert [r.intact for r in report.results] == [True, False, True]
    assert not report.intact and not report.ok


def test_change_outside_bordereaux_keeps_them_intact(signed, pki):
    # the envelope is not covered by bordereau signatures (by design of the Hélios policy)
    changed = signed.replace(b'<DteStr V="2026-11-20"/>', b'<DteStr V="2026-11-21"/>')
    assert verify_pes(changed, trust_store=[pki["ca"]], strict=True).ok


def test_signature_moved_to_another_bordereau_is_refused(signed, pki):
    sigs = re.findall(rb"<ds:Signature .*?</ds:Signature>", signed, flags=re.S)
    swapped = signed.replace(sigs[0], b"@@0@@").replace(sigs[1], sigs[0]).replace(b"@@0@@", sigs[1])
    report = verify_pes(swapped, trust_store=[pki["ca"]])
    assert [r.intact for r in report.results] == [False, False, True]
    assert "SIG-REFERENCE" in _rules(report.results[0])


def test_signature_wrapping_with_duplicate_id_is_refused(signed, pki):
    # an attacker adds a forged bordereau carrying the Id of a signed one
    b1 = re.search(rb'  <Bordereau Id="BORDD00001">.*?</Bordereau>\n', signed, flags=re.S).group(0)
    forged = b1.replace(b'<IdPce V="101"/>', b'<IdPce V="666"/>')
    attacked = signed.replace(b" </PES_DepenseAller>", forged + b" </PES_DepenseAller>")
    report = verify_pes(attacked, trust_store=[pki["ca"]])
    assert not report.intact
    assert any("SIG-REFERENCE" in _rules(r) or "SIG-ID" in _rules(r) for r in report.results)


def test_unsigned_and_partially_signed(pki, maire, signed):
    report = verify_pes(make_pes(2))
    assert not report.intact and all("SIG-ABSENTE" in _rules(r) for r in report.results)
    partial = signed.replace(re.search(rb"<ds:Signature .*?</ds:Signature>", signed, flags=re.S).group(0), b"", 1)
    report = verify_pes(partial, trust_store=[pki["ca"]])
    assert [r.intact for r in report.results] == [False, True, True]
    assert "n'est pas signé" in report.to_text()


def test_untrusted_ca_is_intact_but_not_ok_in_strict(forge, spare_key):
    from flows.signature.pki import make_certificate

    rogue_ca = make_certificate("AC inconnue", is_ca=True, key=spare_key)
    p12, pw = forge("Élu Hors AC", issuer=rogue_ca)
    data = sign_pes(make_pes(1), p12, pw, role="Maire")
    lenient = verify_pes(data, trust_store=[])
    assert lenient.intact and lenient.ok
    assert "SIG-CERT-CHAINE" in _rules(lenient.results[0])
    assert all(f.severity == "warning" for f in lenient.results[0].findings)
    strict = verify_pes(data, trust_store=[], strict=True)
    assert strict.intact and not strict.ok


def test_untrusted_against_real_store(forge, spare_key, reference):
    from flows.signature.pki import make_certificate

    rogue_ca = make_certificate("AC_Helios_Signature", is_ca=True, key=spare_key)  # same name as an RGS CA
    p12, pw = forge("Élu Usurpateur", issuer=rogue_ca)
    data = sign_pes(make_pes(1), p12, pw, role="Maire")
    report = verify_pes(data, trust_store=[reference / "helios" / "signature" / "CA_RGS3.zip"], strict=True)
    assert report.intact and not report.ok and "SIG-CERT-CHAINE" in _rules(report.results[0])


def test_certificate_checked_at_signing_time(forge, pki):
    p12, pw = forge("Élu Bientôt Expiré", not_before=past(10), not_after=future(1))
    data = sign_pes(make_pes(1), p12, pw, role="Maire")
    assert verify_pes(data, trust_store=[pki["ca"]], strict=True).ok
    later = verify_pes(data, trust_store=[pki["ca"]], strict=True, at=future(30))
    assert later.intact and not later.ok and "SIG-CERT-EXPIRE" in _rules(later.results[0])


def test_forged_policy_and_missing_role(signed, pki):
    bad_policy = signed.replace(b"roF9+cfRHNPtVJolhdqfIqGMVuUXX8aR4rpiquf0u5E=", b"AAAA")
    # changing signed properties breaks integrity first
    assert not verify_pes(bad_policy, trust_store=[pki["ca"]]).intact


def test_not_xml_and_not_pes():
    assert not verify_pes(b"not xml").intact
    assert not verify_pes(b"<x/>").ok
    report = verify_pes(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>')
    assert not report.intact and "DOCTYPE" in report.to_text()


def test_trust_store_as_directory(signed, pki):
    assert verify_pes(signed, trust_store=[Path(pki["ca"]).parent], strict=True).ok


def test_unknown_policy_is_reported(maire, pki, monkeypatch):
    from flows.signature import xades
    from flows.signature.dsig import Policy

    fake = Policy("9.9", "urn:oid:1.2.3.4", "sha256", "AAAA", "sha256", xades.POLICIES["1.7"].signature_method, "https://x")
    monkeypatch.setitem(xades.POLICIES, "9.9", fake)
    data = sign_pes(make_pes(1), *maire, role="Maire", policy="9.9")
    report = verify_pes(data, trust_store=[pki["ca"]], strict=True)
    assert report.intact and not report.ok and "SIG-POLITIQUE" in _rules(report.results[0])


def test_to_report_shared_shape(signed, pki):
    rep = verify_pes(signed.replace(b'<IdPce V="201"/>', b'<IdPce V="299"/>'), trust_store=[pki["ca"]]).to_report("x.xml")
    assert rep.kind == "pes_signature" and not rep.ok
    assert rep.summary["bordereaux"] == 3 and rep.summary["intacts"] == 2
    assert rep.summary["signataires"] == ["Jeanne Dupré"]
    assert "SIG-EMPREINTE" in rep.to_json()
