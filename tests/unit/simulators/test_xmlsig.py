"""The counterparts' own XML signature verifier (simulators.xmlsig): third-party signatures verify,
tampering is caught, trust comes only from the counterpart's own store, read again when it changes."""

from __future__ import annotations

import shutil

import pytest

from flows import xmlsafe
from simulators import xmlsig
from simulators.counterparts import Settings
from tests.unit.simulators.conftest import make_pes, sign


@pytest.mark.parametrize("sample", ["SHA256_bordereau.xml", "PESALR2_49101169800000_171227_2045.xml"])
def test_signatures_made_by_other_products_verify(reference, sample):
    """Pastell/Libriciel fixtures (rsa-sha256 policy 1.7, rsa-sha1 policy 1.4): digests and values hold;
    their certificates are not in our store, which is all that is said against them."""
    root = xmlsafe.parse_bytes((reference / "helios" / "samples" / sample).read_bytes())
    sigs = list(root.iter(f"{{{xmlsig.DS}}}Signature"))
    assert sigs
    for sig in sigs:
        verdict = xmlsig.verify_signature(sig, xmlsig.TrustStore())
        assert {p.code for p in verdict.problems} == {xmlsig.CERTIFICATE}, [p.message for p in verdict.problems]


def test_tampering_anywhere_in_the_bordereau_or_the_signed_properties_is_caught(pki):
    trust = xmlsig.TrustStore.load([pki["ca"]])
    signed = sign(pki, make_pes())
    for old, new in [(b"Location de mat", b"Locution de mat"), (b"<xad:SigningTime>2", b"<xad:SigningTime>1"),
                     (b'<Exer V="2026"/>', b'<Exer V="2025"/>')]:
        if old not in signed:
            continue
        root = xmlsafe.parse_bytes(signed.replace(old, new, 1))
        (sig,) = root.iter(f"{{{xmlsig.DS}}}Signature")
        verdict = xmlsig.verify_signature(sig, trust)
        assert any(p.code == xmlsig.SIGNATURE for p in verdict.problems), old
    root = xmlsafe.parse_bytes(signed)
    (sig,) = root.iter(f"{{{xmlsig.DS}}}Signature")
    assert xmlsig.verify_signature(sig, trust).ok


def test_trust_store_is_read_again_when_the_ca_file_appears(pki, tmp_path):
    path = tmp_path / "ca.pem"
    settings = Settings(extra={"trust_store": [str(path)]})
    assert not xmlsig.trust_from_settings(settings)
    shutil.copyfile(pki["ca"], path)
    store = xmlsig.trust_from_settings(settings)
    assert store and "AC démo demat" in store.describe()
