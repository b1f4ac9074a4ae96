"""Independent check: Debian's xmlsec1 (libxmlsec1 + OpenSSL) must accept what we sign."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flows.signature.xades import sign_pes

from .pesfactory import make_pes

XMLSEC1 = shutil.which("xmlsec1")
pytestmark = pytest.mark.skipif(
    XMLSEC1 is None, reason="xmlsec1 absent : installez le paquet Debian xmlsec1 (apt-get install -y xmlsec1)"
)

ID_ATTRS = [
    "--id-attr:Id",
    "Bordereau",
    "--id-attr:Id",
    "http://uri.etsi.org/01903/v1.1.1#:SignedProperties",
    "--id-attr:Id",
    "http://uri.etsi.org/01903/v1.2.2#:SignedProperties",
    "--id-attr:Id",
    "http://www.w3.org/2000/09/xmldsig#:Signature",
]


def xmlsec_verify(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [XMLSEC1, "--verify", *ID_ATTRS, *extra, str(path)], capture_output=True, text=True, timeout=60
    )


def test_xmlsec1_accepts_our_single_bordereau(tmp_path, maire, pki):
    path = tmp_path / "signed.xml"
    path.write_bytes(sign_pes(make_pes(1), *maire, role="Maire", place="40000 Mont-de-Marsan"))
    res = xmlsec_verify(path, "--trusted-pem", pki["ca"])
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout + res.stderr and "References (ok/all): 2/2" in res.stdout + res.stderr


def test_xmlsec1_accepts_each_bordereau_of_a_multi_file(tmp_path, maire, pki):
    path = tmp_path / "signed.xml"
    path.write_bytes(sign_pes(make_pes(2, kind="both"), *maire, role="Maire", policy="1.4"))
    for sig_id in ["BORDD00001_SIG_1", "BORDD00002_SIG_1", "BORDR00001_SIG_1", "BORDR00002_SIG_1"]:
        res = xmlsec_verify(path, "--trusted-pem", pki["ca"], "--node-id", sig_id)
        assert res.returncode == 0, (sig_id, res.stderr)


def test_xmlsec1_refuses_tampered_and_untrusted(tmp_path, maire, pki):
    data = sign_pes(make_pes(1), *maire, role="Maire")
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(data.replace(b'<MtHT V="101.50"/>', b'<MtHT V="101.51"/>'))
    assert xmlsec_verify(tampered, "--trusted-pem", pki["ca"]).returncode != 0
    good = tmp_path / "good.xml"
    good.write_bytes(data)
    assert xmlsec_verify(good).returncode != 0  # no trusted CA given: chain not accepted


@pytest.mark.parametrize("name", ["SHA256_bordereau.xml", "PESALR2_49101169800000_171227_2045.xml"])
def test_xmlsec1_accepts_real_samples(reference, name):
    # --insecure: the 2017/2018 ADULLACT test certificates are neither trusted here nor still valid
    res = xmlsec_verify(reference / "helios" / "samples" / name, "--insecure")
    assert res.returncode == 0, res.stderr


def test_what_xmlsec1_signs_we_verify(tmp_path, maire, pki):
    """The other direction: xmlsec1 fills a template of our XAdES block; verify_pes accepts it."""
    import base64
    import re

    from cryptography.hazmat.primitives import serialization

    from flows.signature.certs import load_signer
    from flows.signature.pki import write_private
    from flows.signature.verify import verify_pes

    signed = sign_pes(make_pes(1), *maire, role="Maire")
    tpl = re.sub(rb"<ds:DigestValue>[^<]*</ds:DigestValue>", b"<ds:DigestValue></ds:DigestValue>", signed)
    tpl = re.sub(rb"(<ds:SignatureValue[^>]*>)[^<]*(</ds:SignatureValue>)", rb"\1\2", tpl)
    tpl = re.sub(rb"<ds:X509Certificate>[^<]*</ds:X509Certificate>", b"<ds:X509Certificate/>", tpl)
    (tmp_path / "tpl.xml").write_bytes(tpl)
    signer = load_signer(*maire)
    key = write_private(
        tmp_path / "key.pem",
        signer.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    (tmp_path / "cert.pem").write_bytes(signer.cert.public_bytes(serialization.Encoding.PEM))
    res = subprocess.run(
        [XMLSEC1, "--sign", *ID_ATTRS, "--privkey-pem", f"{key},{tmp_path / 'cert.pem'}", "--output", str(tmp_path / "out.xml"), str(tmp_path / "tpl.xml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = (tmp_path / "out.xml").read_bytes()
    # RSA PKCS#1 v1.5 is deterministic: same digests and same signature bytes prove that xmlsec1
    # canonicalised the bordereau and the SignedProperties exactly as we did
    def values(doc: bytes) -> list[bytes]:
        found = re.findall(rb"<ds:(?:DigestValue|SignatureValue)[^>]*>([^<]*)<", doc)
        return [base64.b64decode(b"".join(v.split())) for v in found]

    assert len(values(out)) == 3 and values(out) == values(signed)
    report = verify_pes(out, trust_store=[pki["ca"]], strict=True)
    assert report.ok, report.to_text()
    tampered = out.replace(b'<MtHT V="101.50"/>', b'<MtHT V="101.52"/>')
    assert not verify_pes(tampered, trust_store=[pki["ca"]]).intact
