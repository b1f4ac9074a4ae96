"""Two-phase signature (flows.signature.remote): prepare, sign elsewhere, assemble, verify.

Software keys here (the demo PKI); the same code with real SoftHSM2 tokens is in test_token.py
and tests/integration/test_softhsm.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from flows.actes.pdf import minimal_pdf
from flows.signature.certs import CertificateRefused, load_signer
from flows.signature.dsig import sign_bytes
from flows.signature.remote import (
    ExpectedSigner,
    PreparedPdf,
    PreparedPes,
    RemoteSignatureRefused,
    TrustConfig,
    apply_signatures,
    assemble_pdf,
    assemble_pes,
    load_prepared,
    make_batch,
    prepare_detached,
    prepare_pdf,
    prepare_pes,
)
from flows.signature.trust import fingerprint
from flows.signature.verify import verify_pes
from flows.signature.xades import sign_pes

from .conftest import past
from .pesfactory import make_pes

XMLSEC1 = shutil.which("xmlsec1")
OPENSSL = shutil.which("openssl")
WHEN = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@pytest.fixture(scope="module")
def signer(maire):
    return load_signer(*maire)


def _values(prepared, key) -> dict[str, bytes]:
    return {k: sign_bytes(key, v, prepared.method) for k, v in prepared.to_be_signed().items()}


def _crl(ca, revoked_serials=(), *, next_update_days=7, when=None):
    ca_key, ca_cert = ca
    now = when or datetime.now(UTC)
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now - timedelta(days=1)).next_update(now + timedelta(days=next_update_days)))
    for serial in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - timedelta(hours=1)).build()
        )
    return b.sign(ca_key, hashes.SHA256())


# --- PES ---------------------------------------------------------------------------------------------


def test_two_phase_pes_is_the_one_phase_output_and_verifies(signer, maire, pki):
    pes = make_pes(3, kind="both")
    prepared = prepare_pes(pes, signer.cert, role="Maire", place="40000 Mont-de-Marsan", signing_time=WHEN)
    assert [b.id for b in prepared.bordereaux] == ["BORDD00001", "BORDD00002", "BORDD00003",
                                                   "BORDR00001", "BORDR00002", "BORDR00003"]
    assert all(len(d) == 32 for d in prepared.digests().values())  # SHA-256 for policy 1.7
    signed = assemble_pes(prepared, _values(prepared, signer.key))
    assert signed == sign_pes(pes, *maire, role="Maire", place="40000 Mont-de-Marsan", signing_time=WHEN)
    report = verify_pes(signed, trust_store=[pki["ca"]], strict=True)
    assert report.ok, report.to_text()
    assert len(report.results) == 6 and all(r.intact for r in report.results)


def test_policy_14_uses_sha1_digests(signer, pki):
    prepared = prepare_pes(make_pes(1), signer.cert, role="Maire", policy="1.4")
    assert prepared.digest_algorithm == "sha1" and len(prepared.digests()["BORDD00001"]) == 20
    signed = assemble_pes(prepared, _values(prepared, signer.key))
    assert verify_pes(signed, trust_store=[pki["ca"]]).ok


def test_prepared_state_survives_a_restart(signer, pki):
    """Stored as JSON without the document (the platform keeps it in its store), reloaded, assembled."""
    pes = make_pes(2)
    text = prepare_pes(pes, signer.cert, role="Maire", signing_time=WHEN).to_json(include_document=False)
    assert "BEGIN" not in text and "PRIVATE" not in text
    reloaded = load_prepared(text)  # a new process: no cached tree, no builder
    assert isinstance(reloaded, PreparedPes) and reloaded.document is None
    values = _values(reloaded, signer.key)
    with pytest.raises(RemoteSignatureRefused, match="document d'origine"):
        assemble_pes(reloaded, values)
    with pytest.raises(RemoteSignatureRefused, match="empreinte SHA-256 différente"):
        assemble_pes(reloaded, values, pes=pes.replace(b'V="101.50"', b'V="999.50"'))
    signed = assemble_pes(reloaded, values, pes=pes)
    assert verify_pes(signed, trust_store=[pki["ca"]], strict=True).ok
    # and the same state and values assemble to the same bytes (idempotent)
    assert assemble_pes(PreparedPes.from_json(text), values, pes=pes) == signed


def test_bad_signature_value_is_refused_naming_the_bordereau(signer, spare_key):
    pes = make_pes(2)
    prepared = prepare_pes(pes, signer.cert, role="Maire")
    values = _values(prepared, signer.key)
    bad = dict(values, BORDD00002=sign_bytes(spare_key, prepared.to_be_signed()["BORDD00002"], prepared.method))
    with pytest.raises(RemoteSignatureRefused, match=r"bordereau 2 \(Id BORDD00002\) ne correspond pas"):
        assemble_pes(prepared, bad)
    flipped = bytearray(values["BORDD00001"])
    flipped[10] ^= 1
    with pytest.raises(RemoteSignatureRefused, match="bordereau 1"):
        assemble_pes(prepared, dict(values, BORDD00001=bytes(flipped)))
    with pytest.raises(RemoteSignatureRefused, match="Signature manquante pour 1 bordereau"):
        assemble_pes(prepared, {"BORDD00001": values["BORDD00001"]})
    # a signature of bordereau 1's SignedInfo posted for bordereau 2 does not verify either
    with pytest.raises(RemoteSignatureRefused, match="BORDD00002"):
        assemble_pes(prepared, dict(values, BORDD00002=values["BORDD00001"]))


def test_hostile_prepared_state_is_refused():
    for text in ["", "[]", '{"format": "demat-prepared-pes/1"}', json.dumps({"format": "autre"}),
                 '{"format": "demat-prepared-pes/1", "document_sha256": "x", "certificate": "!!", "role": "M"}']:
        with pytest.raises(RemoteSignatureRefused):
            load_prepared(text)
        with pytest.raises(RemoteSignatureRefused):
            PreparedPes.from_json(text)


# --- certificates --------------------------------------------------------------------------------------


def _cert(forge, label, **kw):
    path, pw = forge(label, **kw)
    return load_signer(path, pw).cert


def test_certificate_refusals_with_reasons(forge, signer, pki, ca):
    pes = make_pes(1)
    trust = TrustConfig(anchors=[pki["ca"]])
    # not the step's official
    with pytest.raises(CertificateRefused, match="n'est pas celui enregistré pour le signataire"):
        prepare_pes(pes, _cert(forge, "Autre élu"), role="Maire", expected=ExpectedSigner("Jeanne Dupré", fingerprint(signer.cert)))
    with pytest.raises(CertificateRefused, match="pas celui de « Jeanne Dupré »"):
        prepare_pes(pes, _cert(forge, "Autre élu"), role="Maire", expected=ExpectedSigner(name="Jeanne Dupré"))
    # expired
    with pytest.raises(CertificateRefused, match="a expiré"):
        prepare_pes(pes, _cert(forge, "Expiré", not_before=past(400), not_after=past(2)), role="Maire", trust=trust)
    # no signing key usage
    with pytest.raises(CertificateRefused, match="ne peut pas servir à signer"):
        prepare_pes(pes, _cert(forge, "Chiffrement", usages=("key_encipherment",)), role="Maire", trust=trust)
    # untrusted CA
    with pytest.raises(CertificateRefused, match="autorité absente du magasin de confiance"):
        prepare_pes(pes, _cert(forge, "AC inconnue", issuer=None), role="Maire", trust=trust)
    # the right official passes, with the expected certificate
    assert prepare_pes(pes, signer.cert, role="Maire", trust=trust,
                       expected=ExpectedSigner("Jeanne Dupré", fingerprint(signer.cert))).bordereaux


def test_revoked_certificate_is_refused_by_the_crl(forge, pki, ca, tmp_path):
    pes = make_pes(1)
    revoked = _cert(forge, "Révoqué")
    good = _cert(forge, "Valide")
    crl_path = tmp_path / "ac.crl"
    crl_path.write_bytes(_crl(ca, [revoked.serial_number]).public_bytes(serialization.Encoding.DER))
    trust = TrustConfig(anchors=[pki["ca"]], crls=[crl_path])
    with pytest.raises(CertificateRefused, match="a été révoqué le"):
        prepare_pes(pes, revoked, role="Maire", trust=trust)
    assert prepare_pes(pes, good, role="Maire", trust=trust).bordereaux
    # a stale CRL: refused only when a CRL is required (production), with the reason
    stale = tmp_path / "stale.crl"
    stale.write_bytes(_crl(ca, [], when=datetime.now(UTC) - timedelta(days=30)).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertificateRefused, match="périmée"):
        prepare_pes(pes, good, role="Maire", trust=TrustConfig(anchors=[pki["ca"]], crls=[stale], crl_required=True))
    # a CRL not signed by the issuer is not believed
    from flows.signature.pki import new_rsa_key

    forged_ca = (new_rsa_key(2048), ca[1])
    bad = tmp_path / "forged.crl"
    bad.write_bytes(_crl(forged_ca, []).public_bytes(serialization.Encoding.DER))
    with pytest.raises(CertificateRefused, match="n'est pas signée par l'autorité"):
        prepare_pes(pes, good, role="Maire", trust=TrustConfig(anchors=[pki["ca"]], crls=[bad]))
    junk = tmp_path / "junk.crl"
    junk.write_bytes(b"pas une CRL")
    with pytest.raises(CertificateRefused, match="n'est pas une CRL"):
        prepare_pes(pes, good, role="Maire", trust=TrustConfig(anchors=[pki["ca"]], crls=[junk]))


def test_revoked_between_preparation_and_post_is_refused_on_assembly(forge, pki, ca, tmp_path):
    path, pw = forge("Révoqué plus tard")
    s = load_signer(path, pw)
    pes = make_pes(1)
    trust = TrustConfig(anchors=[pki["ca"]], crls=[tmp_path / "ac.crl"])
    (tmp_path / "ac.crl").write_bytes(_crl(ca, []).public_bytes(serialization.Encoding.DER))
    prepared = prepare_pes(pes, s.cert, role="Maire", trust=trust)
    posted = {"format": "demat-signatures/1", "signatures": {
        f"d1/{k}": base64.b64encode(v).decode() for k, v in _values(prepared, s.key).items()}}
    (tmp_path / "ac.crl").write_bytes(_crl(ca, [s.cert.serial_number]).public_bytes(serialization.Encoding.DER))
    trust.reload()  # the nightly refresh
    with pytest.raises(CertificateRefused, match="révoqué"):
        apply_signatures({"d1": prepared}, posted, trust=trust)


# --- batches -----------------------------------------------------------------------------------------------


def test_batch_posted_in_parts_and_twice(signer, pki):
    """A token removed mid-batch: what was signed is kept, the rest waits; the same post twice is harmless."""
    docs = {"d1": prepare_pes(make_pes(3), signer.cert, role="Maire"), "d2": prepare_pes(make_pes(2), signer.cert, role="Maire")}
    batch = make_batch(docs, batch_id="lot-1", summaries={"d1": "Commune A — mandats", "d2": "Commune B"})
    assert len(batch["items"]) == 5 and batch["signer"] == "Jeanne Dupré"
    assert batch["certificate_sha256"] == fingerprint(signer.cert)
    assert batch["items"][0]["summary"] == "Commune A — mandats — bordereau 1"
    raw = {it["id"]: base64.b64decode(it["digest"]) for it in batch["items"]}
    sig = {i: signer.key.sign(d, padding.PKCS1v15(), _prehashed()) for i, d in raw.items()}

    def post(ids):
        return {"format": "demat-signatures/1", "signatures": {i: base64.b64encode(sig[i]).decode() for i in ids}}

    first = apply_signatures(docs, post(["d1/BORDD00001", "d1/BORDD00002"]))
    assert first.signed == {} and first.waiting == {"d1": ["BORDD00003"], "d2": ["BORDD00001", "BORDD00002"]}
    second = apply_signatures(docs, post(list(sig)), already=first.accepted)
    assert set(second.signed) == {"d1", "d2"} and not second.refused and not second.waiting
    again = apply_signatures(docs, post(list(sig)), already=second.accepted)
    assert again.signed == second.signed  # applied once: same documents, byte for byte
    for data in second.signed.values():
        assert verify_pes(data, trust_store=[pki["ca"]], strict=True).ok
    bad = post(["d2/BORDD00001"])
    bad["signatures"]["d2/BORDD00001"] = base64.b64encode(sig["d1/BORDD00002"]).decode()
    bad["signatures"]["d9/X"] = "AAAA"
    res = apply_signatures(docs, bad)
    assert "ne correspond pas" in res.refused["d2/BORDD00001"] and "pas dans ce lot" in res.refused["d9/X"]
    assert "d2" not in res.signed


def _prehashed():
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    return Prehashed(hashes.SHA256())


def test_batch_refuses_two_signers(signer, forge):
    other = _cert(forge, "Autre")
    with pytest.raises(RemoteSignatureRefused, match="un seul certificat"):
        make_batch({"a": prepare_pes(make_pes(1), signer.cert, role="Maire"),
                    "b": prepare_pes(make_pes(1), other, role="Maire")}, batch_id="x")
    with pytest.raises(RemoteSignatureRefused, match="format inconnu"):
        apply_signatures({}, {"format": "autre"})


# --- PDF (PAdES) ---------------------------------------------------------------------------------------------


def _pdf_value(prepared: PreparedPdf, key) -> bytes:
    return key.sign(prepared.signed_attrs, padding.PKCS1v15(), hashes.SHA256())


def _der_value(blob: bytes) -> bytes:
    """The DER value at the start of the zero-padded /Contents (a signature may itself end in 00 bytes,
    which stripping trailing zeros cut off about once in a hundred runs)."""
    assert blob[0] == 0x30, "CMS SignedData is a DER SEQUENCE"
    if blob[1] < 0x80:
        return blob[:2 + blob[1]]
    n = blob[1] & 0x7F
    return blob[:2 + n + int.from_bytes(blob[2:2 + n], "big")]


def pades_check(signed: bytes, ca_pem: str, tmp_path) -> None:
    """pyHanko's validator and openssl cms -verify on the extracted CMS and ByteRange content."""
    from asn1crypto import x509 as ax
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    ca = ax.Certificate.load(x509.load_pem_x509_certificate(open(ca_pem, "rb").read()).public_bytes(serialization.Encoding.DER))
    sig = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    status = validate_pdf_signature(sig, ValidationContext(trust_roots=[ca]))
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    if OPENSSL:
        m = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", signed)
        a, b, c, d = map(int, m.groups())
        content = signed[a:a + b] + signed[c:c + d]
        hexsig = signed[a + b + 1: c - 1]
        (tmp_path / "sig.der").write_bytes(_der_value(bytes.fromhex(hexsig.decode())))
        (tmp_path / "content.bin").write_bytes(content)
        res = subprocess.run([OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
                              "-content", str(tmp_path / "content.bin"), "-CAfile", ca_pem, "-purpose", "any",
                              "-out", "/dev/null"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "Verification successful" in res.stderr, res.stderr


def test_two_phase_pades_with_restart_idempotence_and_checks(signer, pki, tmp_path, spare_key):
    pdf = minimal_pdf("Délibération n° 2026-12", "Budget primitif")
    prepared = prepare_pdf(pdf, signer.cert, role="Maire", place="Mont-de-Marsan", name="acte.pdf")
    assert prepared.prepared_pdf.startswith(pdf)  # an incremental update: the original bytes stay
    reloaded = load_prepared(prepared.to_json())
    assert isinstance(reloaded, PreparedPdf)
    value = _pdf_value(reloaded, signer.key)
    signed = assemble_pdf(reloaded, value)
    assert assemble_pdf(load_prepared(prepared.to_json()), value) == signed  # idempotent
    pades_check(signed, pki["ca"], tmp_path)
    with pytest.raises(RemoteSignatureRefused, match="« acte.pdf » ne correspond pas"):
        assemble_pdf(reloaded, _pdf_value(reloaded, spare_key))
    tampered = dict(json.loads(prepared.to_json()), reserved_end=10**9)
    with pytest.raises(RemoteSignatureRefused, match="zone réservée"):
        load_prepared(tampered)


def test_pades_refuses_bad_certificates_and_pdfs(forge, pki):
    from flows.signature.pades import PadesError

    with pytest.raises(CertificateRefused, match="a expiré"):
        prepare_pdf(minimal_pdf("x"), _cert(forge, "Expiré PDF", not_before=past(400), not_after=past(2)), role="Maire")
    with pytest.raises(PadesError):
        prepare_pdf(b"%PDF-1.4 pas vraiment un PDF", load_signer(*_forge_ok(forge)).cert, role="Maire")


def _forge_ok(forge):
    return forge("Bon PDF")


@pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 absent : apt-get install -y xmlsec1")
def test_xmlsec1_accepts_two_phase_pes(signer, pki, tmp_path):
    from .test_xmlsec1 import xmlsec_verify

    prepared = load_prepared(prepare_pes(make_pes(2), signer.cert, role="Maire").to_json())
    path = tmp_path / "signed.xml"
    path.write_bytes(assemble_pes(prepared, _values(prepared, signer.key)))
    for sig_id in ("BORDD00001_SIG_1", "BORDD00002_SIG_1"):
        res = xmlsec_verify(path, "--trusted-pem", pki["ca"], "--node-id", sig_id)
        assert res.returncode == 0, res.stderr


def test_detached_xades_two_phase_in_a_mixed_batch(signer, pki, spare_key):
    from flows.signature.detached import sign_detached, verify_detached

    pdf = minimal_pdf("Arrêté n° 5")
    docs = {"acte": prepare_detached(pdf, signer.cert, role="Maire", name="99_AR_acte.pdf", signing_time=WHEN),
            "pes": prepare_pes(make_pes(1), signer.cert, role="Maire")}
    reloaded = {r: load_prepared(p.to_json()) for r, p in docs.items()}
    batch = make_batch(reloaded, batch_id="mixte")
    assert [it["id"] for it in batch["items"]] == ["acte/xades", "pes/BORDD00001"]
    sigs = {it["id"]: signer.key.sign(base64.b64decode(it["digest"]), padding.PKCS1v15(), _prehashed()) for it in batch["items"]}
    posted = {"format": "demat-signatures/1", "signatures": {k: base64.b64encode(v).decode() for k, v in sigs.items()}}
    applied = apply_signatures(reloaded, posted, trust=TrustConfig(anchors=[pki["ca"]]))
    assert set(applied.signed) == {"acte", "pes"}
    result = verify_detached(pdf, applied.signed["acte"], [pki["ca"]], strict=True)
    assert result.ok, [f.message for f in result.findings]
    assert not verify_detached(pdf + b" ", applied.signed["acte"], [pki["ca"]]).intact
    # the one-phase path is the same code: same bytes for the same signing time
    assert applied.signed["acte"] == sign_detached(pdf, pki["officials"]["maire"]["p12"],
                                                   open(pki["officials"]["maire"]["password_file"], "rb").read().strip(),
                                                   role="Maire", name="99_AR_acte.pdf", signing_time=WHEN)
    bad = dict(posted, signatures={"acte/xades": base64.b64encode(b"\x00" * 256).decode()})
    assert "ne correspond pas" in apply_signatures(reloaded, bad).refused["acte/xades"]


def test_ecdsa_certificate_pes_and_pdf(ca, pki, tmp_path):
    """An EC token returns r||s (CKM_ECDSA): XML-DSig takes it as is, the CMS gets it DER-encoded."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from flows.signature.pki import make_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    _k, cert = make_certificate("Élue ECDSA", issuer=ca, key=key, role="Maire")
    prepared = load_prepared(prepare_pes(make_pes(2), cert, role="Maire").to_json())
    assert prepared.method.endswith("ecdsa-sha256")
    signed = assemble_pes(prepared, _values(prepared, key))
    assert verify_pes(signed, trust_store=[pki["ca"]], strict=True).ok
    pp = prepare_pdf(minimal_pdf("EC"), cert, role="Maire", chain=[ca[1]])
    r_s = sign_bytes(key, pp.signed_attrs, "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256")
    pades_check(assemble_pdf(load_prepared(pp.to_json()), r_s), pki["ca"], tmp_path)


def test_tampered_prepared_state_cannot_inject_xml(signer):
    data = json.loads(prepare_pes(make_pes(1), signer.cert, role="Maire").to_json())
    data["bordereaux"][0]["id"] = 'BORDD00001" Id="x"><evil/><a b="'
    with pytest.raises(RemoteSignatureRefused, match="illisible"):
        load_prepared(data)


def test_ecdsa_repost_keeps_the_first_accepted_signature(ca, pki):
    """ECDSA values differ at every signature: a second post must not change a signed document."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from flows.signature.pki import make_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    _k, cert = make_certificate("Élue ECDSA bis", issuer=ca, key=key, role="Maire")
    docs = {"d": prepare_pes(make_pes(1), cert, role="Maire")}

    def post():
        vals = _values(docs["d"], key)
        return {"format": "demat-signatures/1", "signatures": {f"d/{k}": base64.b64encode(v).decode() for k, v in vals.items()}}

    first = apply_signatures(docs, post())
    second = apply_signatures(docs, post(), already=first.accepted)
    assert second.signed["d"] == first.signed["d"]


def test_pades_from_inside_a_running_event_loop(signer):
    """An async API endpoint calls prepare/assemble: pyHanko's event loop runs in a worker thread."""
    import asyncio

    async def endpoint():
        prepared = prepare_pdf(minimal_pdf("async"), signer.cert, role="Maire")
        return assemble_pdf(prepared, _pdf_value(prepared, signer.key))

    assert asyncio.run(endpoint()).startswith(b"%PDF")


def test_crl_refreshed_from_a_url_keeps_the_last_good_list(ca, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from flows.signature.trust import load_crl, refresh_crl

    served = {"/ac.crl": _crl(ca, [4242]).public_bytes(serialization.Encoding.DER), "/casse.crl": b"<html>erreur</html>"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = served.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        dest = refresh_crl(f"{base}/ac.crl", tmp_path / "crl" / "ac.crl")
        _name, crl = load_crl(dest)
        assert crl.get_revoked_certificate_by_serial_number(4242) is not None
        good = dest.read_bytes()
        with pytest.raises(CertificateRefused, match="n'est pas une CRL"):
            refresh_crl(f"{base}/casse.crl", dest)
        with pytest.raises(CertificateRefused, match="liste précédente est conservée"):
            refresh_crl(f"{base}/absente.crl", dest)
        with pytest.raises(CertificateRefused, match="http ou https"):
            refresh_crl("file:///etc/passwd", dest)
        assert dest.read_bytes() == good
    finally:
        server.shutdown()
        server.server_close()
