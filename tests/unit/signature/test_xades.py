"""Signing: shape of the XAdES block, document preserved, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from flows import xmlsafe
from flows.signature.certs import CertificateRefused
from flows.signature.dsig import DS, XADES_111
from flows.signature.verify import verify_pes
from flows.signature.xades import SignatureError, sign_pes

from .conftest import future, past
from .pesfactory import make_pes

X = XADES_111
T = datetime.now(UTC).replace(microsecond=0)


def _sigs(data: bytes):
    return xmlsafe.parse_bytes(data).findall(f".//Bordereau/{{{DS}}}Signature")


def test_structure_mirrors_the_field_samples(maire):
    out = sign_pes(make_pes(1), *maire, role="Maire", place="40000 Mont-de-Marsan", signing_time=T)
    root = xmlsafe.parse_bytes(out)
    b = root.find("PES_DepenseAller/Bordereau")
    sig = b[-1]
    assert sig.tag == f"{{{DS}}}Signature" and sig.get("Id") == "BORDD00001_SIG_1" and sig.tail is None
    assert [etree.QName(c).localname for c in sig] == ["SignedInfo", "SignatureValue", "KeyInfo", "Object"]
    si = sig[0]
    assert [etree.QName(c).localname for c in si] == ["CanonicalizationMethod", "SignatureMethod", "Reference", "Reference"]
    assert si[0].get("Algorithm") == "http://www.w3.org/2001/10/xml-exc-c14n#"
    assert si[1].get("Algorithm") == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    r1, r2 = si[2], si[3]
    assert r1.get("URI") == "#BORDD00001"
    assert [t.get("Algorithm") for t in r1.find(f"{{{DS}}}Transforms")] == [
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
    ]
    assert r1.find(f"{{{DS}}}DigestMethod").get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#sha256"
    assert r2.get("Type") == f"{X}SignedProperties" and r2.get("URI") == "#BORDD00001_SIG_1_SP"
    assert sig[1].get("Id") == "BORDD00001_SIG_1_SV"
    assert sig.find(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate") is not None
    qp = sig.find(f"{{{DS}}}Object/{{{X}}}QualifyingProperties")
    assert qp.get("Target") == "#BORDD00001_SIG_1" and qp.prefix == "xad"
    sp = qp.find(f"{{{X}}}SignedProperties")
    assert sp.get("Id") == "BORDD00001_SIG_1_SP"
    ssp = sp.find(f"{{{X}}}SignedSignatureProperties")
    assert [etree.QName(c).localname for c in ssp] == [
        "SigningTime",
        "SigningCertificate",
        "SignaturePolicyIdentifier",
        "SignatureProductionPlace",
        "SignerRole",
    ]
    assert ssp.findtext(f"{{{X}}}SigningTime") == T.strftime("%Y-%m-%dT%H:%M:%SZ")
    pid = ssp.find(f"{{{X}}}SignaturePolicyIdentifier/{{{X}}}SignaturePolicyId")
    assert pid.findtext(f"{{{X}}}SigPolicyId/{{{X}}}Identifier") == "urn:oid:1.2.250.1.131.1.5.18.21.1.7"
    assert pid.findtext(f"{{{X}}}SigPolicyHash/{{{X}}}DigestValue") == "roF9+cfRHNPtVJolhdqfIqGMVuUXX8aR4rpiquf0u5E="
    cert = ssp.find(f"{{{X}}}SigningCertificate/{{{X}}}Cert")
    assert cert.find(f"{{{X}}}CertDigest/{{{X}}}DigestValue") is not None
    assert cert.find(f"{{{X}}}IssuerSerial/{{{DS}}}X509SerialNumber").text.isdigit()
    place = ssp.find(f"{{{X}}}SignatureProductionPlace")
    assert place.findtext(f"{{{X}}}City") == "Mont-de-Marsan" and place.findtext(f"{{{X}}}PostalCode") == "40000"
    assert ssp.findtext(f"{{{X}}}SignerRole/{{{X}}}ClaimedRoles/{{{X}}}ClaimedRole") == "Maire"


def test_document_preserved_encoding_declaration_infodem(maire):
    pes = make_pes(3, kind="both")
    out = sign_pes(pes, *maire, role="Maire")
    assert out.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n')
    assert "SOCIÉTÉ".encode("iso-8859-1") in out
    # everything except the inserted signatures and InfoDematerialisee is byte-identical
    stripped = out
    for sig in _sigs(out):
        text = etree.tostring(sig, encoding="ISO-8859-1").split(b"?>\n", 1)[1]
        assert text not in pes
    import re

    stripped = re.sub(rb"<ds:Signature .*?</ds:Signature>", b"", out, flags=re.S)
    assert stripped == pes.replace(b'<InfoDematerialisee V="0"/>', b'<InfoDematerialisee V="1"/>')
    root = xmlsafe.parse_bytes(out)
    assert [i.get("V") for i in root.iter("InfoDematerialisee")] == ["1", "1"]
    assert len(_sigs(out)) == 6
    report = verify_pes(out, trust_store=[], strict=False)
    assert report.intact and report.ok and len(report.results) == 6


def test_infodematerialisee_inserted_when_missing(maire, pki):
    out = sign_pes(make_pes(2, info_dematerialisee=None), *maire, role="Maire")
    head = xmlsafe.parse_bytes(out).find("PES_DepenseAller/EnTeteDepense")
    assert [c.tag for c in head] == ["IdVer", "InfoDematerialisee"] and head[1].get("V") == "1"
    assert verify_pes(out, trust_store=[pki["ca"]], strict=True).ok


def test_root_without_ds_prefix_and_policy_14(maire, pki):
    out = sign_pes(make_pes(2, declare_ds=False), *maire, role="Ordonnateur", policy="1.4")
    assert b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"' in out
    assert b"xmldsig#rsa-sha1" in out and b"Jkdb+aba0Hz6+ZPKmKNhPByzQ+Q=" in out
    report = verify_pes(out, trust_store=[pki["ca"]], strict=True)
    assert report.ok and {r.policy for r in report.results} == {"1.4"}


def test_fallback_path_when_comments_present(maire, pki):
    pes = make_pes(2).replace(b"<Piece>", b"<!-- </Bordereau> --><Piece>", 1)
    out = sign_pes(pes, *maire, role="Maire")
    assert out.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert b"<!-- </Bordereau> -->" in out
    report = verify_pes(out, trust_store=[pki["ca"]], strict=True)
    assert report.ok and len(report.results) == 2


def test_accented_role_and_place(maire, pki):
    out = sign_pes(make_pes(1), *maire, role="Première adjointe", place="Saint-Étienne-d'Orthe")
    assert "Première adjointe".encode("iso-8859-1") in out
    report = verify_pes(out, trust_store=[pki["ca"]], strict=True)
    assert report.ok and report.results[0].role == "Première adjointe"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"not_before": past(400), "not_after": past(1)}, "a expiré"),
        ({"not_before": future(5)}, "pas encore valide"),
        ({"usages": ("key_encipherment",)}, "ne peut pas servir à signer"),
        ({"usages": ()}, "ne peut pas servir à signer"),
    ],
)
def test_refuses_bad_certificates(forge, kwargs, message):
    p12, pw = forge("Élu Refusé", **kwargs)
    with pytest.raises(CertificateRefused, match=message):
        sign_pes(make_pes(1), p12, pw, role="Maire")


def test_signing_time_outside_validity_is_refused(maire):
    with pytest.raises(CertificateRefused, match="pas encore valide"):
        sign_pes(make_pes(1), *maire, role="Maire", signing_time=past(30))


@pytest.mark.parametrize(
    ("pes", "message"),
    [
        (b'<?xml version="1.0"?><Autre/>', "pas un PES_Aller"),
        (make_pes(1).replace(b'<Bordereau Id="BORDD00001">', b"<Bordereau>"), "Id valide"),
        (make_pes(2).replace(b'Id="BORDD00002"', b'Id="BORDD00001"'), "plusieurs éléments"),
        (make_pes(1).replace(b'Id="ID1"', b'Id="BORDD00001_SIG_1"'), "existe déjà"),
    ],
)
def test_refuses_bad_documents(maire, pes, message):
    with pytest.raises(SignatureError, match=message):
        sign_pes(pes, *maire, role="Maire")


def test_refuses_no_bordereau(maire):
    pes = make_pes(1)
    start, end = pes.index(b"  <Bordereau"), pes.index(b"</Bordereau>\n") + len(b"</Bordereau>\n")
    with pytest.raises(SignatureError, match="aucun bordereau"):
        sign_pes(pes[:start] + pes[end:], *maire, role="Maire")


def test_refuses_already_signed_and_missing_role(maire):
    once = sign_pes(make_pes(1), *maire, role="Maire")
    with pytest.raises(SignatureError, match="déjà signé"):
        sign_pes(once, *maire, role="Maire")
    with pytest.raises(SignatureError, match="rôle"):
        sign_pes(make_pes(1), *maire, role="  ")
    with pytest.raises(SignatureError, match="caractères interdits"):
        sign_pes(make_pes(1), *maire, role="Maire\x01")
    with pytest.raises(SignatureError, match="Politique"):
        sign_pes(make_pes(1), *maire, role="Maire", policy="9.9")


def test_refuses_doctype(maire):
    pes = make_pes(1).replace(b"?>\n", b'?>\n<!DOCTYPE x [<!ENTITY e "boom">]>\n', 1)
    with pytest.raises(ValueError, match="DOCTYPE"):
        sign_pes(pes, *maire, role="Maire")


def test_markup_in_role_is_escaped(maire, pki):
    out = sign_pes(make_pes(1), *maire, role='Maire</xad:ClaimedRole><x a="&')
    report = verify_pes(out, trust_store=[pki["ca"]], strict=True)
    assert report.ok and report.results[0].role == 'Maire</xad:ClaimedRole><x a="&'


def test_signs_the_project_generator_output(maire, pki):
    gen = pytest.importorskip("flows.helios.generate", reason="flows.helios.generate pas encore disponible")
    pes = gen.generate_pes(
        siret="21400192300018", idpost="040000", codcol="001", codbud="00", nomfic="PESALR2_SIG", n_bordereaux=4
    )
    out = sign_pes(pes, *maire, role="Maire")
    report = verify_pes(out, trust_store=[pki["ca"]], strict=True)
    assert report.ok and len(report.results) == 4
    assert xmlsafe.parse_bytes(out).find(".//EnTeteDepense/InfoDematerialisee").get("V") == "1"


def test_backdated_signing_time_cannot_revive_expired_certificate(forge):
    p12, pw = forge("Élu Expiré Hier", not_before=past(400), not_after=past(1))
    with pytest.raises(CertificateRefused, match="a expiré"):
        sign_pes(make_pes(1), p12, pw, role="Maire", signing_time=past(30))


def test_xades_122_namespace_option(maire, pki):
    from flows.signature.dsig import XADES_122

    out = sign_pes(make_pes(1), *maire, role="Maire", xades_namespace=XADES_122)
    assert b'Type="http://uri.etsi.org/01903/v1.2.2#SignedProperties"' in out
    assert verify_pes(out, trust_store=[pki["ca"]], strict=True).ok


def test_odd_infodematerialisee_goes_through_tree_path(maire, pki):
    pes = make_pes(1).replace(b'<InfoDematerialisee V="0"/>', b'<InfoDematerialisee V="a>b"/>')
    out = sign_pes(pes, *maire, role="Maire")
    head = xmlsafe.parse_bytes(out).find("PES_DepenseAller/EnTeteDepense")
    assert [i.get("V") for i in head.findall("InfoDematerialisee")] == ["1"]
    assert verify_pes(out, trust_store=[pki["ca"]], strict=True).ok
