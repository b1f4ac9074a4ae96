from __future__ import annotations

import pytest

from flows import xmlsafe
from flows.signature.certs import CertificateRefused
from flows.signature.detached import sign_detached, verify_detached

from .conftest import past

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


def test_detached_roundtrip_and_tamper(maire, pki):
    sig = sign_detached(PDF, *maire, role="Maire", name="99_DE-040-214001923-20261120-2026_12-DE-1-1_1.pdf")
    root = xmlsafe.parse_bytes(sig)
    assert root.tag.endswith("Signature")
    ok = verify_detached(PDF, sig, [pki["ca"]], strict=True)
    assert ok.intact and ok.ok and ok.signer == "Jeanne Dupré" and ok.role == "Maire"
    bad = verify_detached(PDF + b" ", sig, [pki["ca"]], strict=True)
    assert not bad.intact and any(f.rule == "SIG-EMPREINTE" for f in bad.findings)
    untrusted = verify_detached(PDF, sig, [], strict=True)
    assert untrusted.intact and not untrusted.ok


def test_detached_refuses_expired(forge):
    p12, pw = forge("Élu Expiré Acte", not_before=past(400), not_after=past(2))
    with pytest.raises(CertificateRefused, match="expiré"):
        sign_detached(PDF, p12, pw, role="Maire")


def test_detached_garbage_signature():
    assert not verify_detached(PDF, b"garbage").intact
    assert not verify_detached(PDF, b"<x/>").intact
