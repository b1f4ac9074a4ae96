"""Issue 15: signatures written by other systems get the right verdict from `demat verify`.

- a certificate expired at SigningTime is refused (Hélios answers ERREUR_CERTIFICAT), exit 1;
- a CA chain signed with SHA-1 (the real DGFiP chain) is accepted when `openssl verify` accepts
  it at the signing time, with a warning saying SHA-1 is weak;
- a policy digest written without base64 padding is accepted;
- a bordereau changed after signing is reported as "contenu signé modifié", naming the
  reference and the bordereau (also when the digests were recomputed: then the SignatureValue).
"""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.cli import main
from flows.signature.certs import build_chain, common_name, load_trust_store, weak_hash
from flows.signature.verify import verify_pes
from flows.signature.xades import sign_pes

from .conftest import past
from .pesfactory import make_pes


def _rules(report) -> set[str]:
    return {f.rule for f in report.all_findings}


@pytest.fixture(scope="module")
def signed(maire) -> bytes:
    return sign_pes(make_pes(2), *maire, role="Maire", place="Mont-de-Marsan")


# ---------------------------------------------------------------- expired at signing time


@pytest.fixture
def expired_signed(forge, monkeypatch) -> bytes:
    """What a foreign signer that does not check validity writes: SigningTime after notAfter."""
    import flows.signature.trust as trust

    p12, pw = forge("Élu Expiré", not_before=past(400), not_after=past(10))
    monkeypatch.setattr(trust, "check_signer", lambda *a, **k: None)
    return sign_pes(make_pes(1), p12, pw, role="Maire", signing_time=past(5))


def test_expired_at_signing_time_is_refused_by_default(expired_signed, pki):
    report = verify_pes(expired_signed, trust_store=[pki["ca"]])
    assert report.intact  # the bytes are intact ...
    assert not report.ok  # ... but the signature is refused, as Hélios refuses it
    expired = [f for f in report.all_findings if f.rule == "SIG-CERT-EXPIRE"]
    assert expired and expired[0].severity == "error"
    assert "ERREUR_CERTIFICAT" in expired[0].message and "refus" in expired[0].message
    assert report.to_text().splitlines()[0].endswith("RÉSULTAT : NON CONFORME")


def test_expired_at_signing_time_cli_exit_1(expired_signed, tmp_path, capsys):
    path = tmp_path / "expire.xml"
    path.write_bytes(expired_signed)
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "NON CONFORME" in out and "SIG-CERT-EXPIRE" in out


def test_valid_at_signing_time_stays_conforme(signed, pki):
    report = verify_pes(signed, trust_store=[pki["ca"]])
    assert report.ok and not any(f.severity == "error" for f in report.all_findings)


# ---------------------------------------------------------------- SHA-1 CA chains


def test_real_dgfip_chain_signed_with_sha1_is_accepted_with_warning(reference):
    store = load_trust_store([reference / "helios" / "signature" / "CA_RGS3.zip"])
    pairs = [(c, i) for c in store if weak_hash(c) for i in store
             if i is not c and i.subject == c.issuer and c.issuer != c.subject]
    assert pairs, "le magasin CA_RGS3 de référence contient une chaîne DGFiP signée en SHA-1"
    leaf, root = next((c, i) for c, i in pairs if "Finances Publiques" in common_name(i))
    when = leaf.not_valid_before_utc + timedelta(days=1)
    notes: list[str] = []
    chain, problems = build_chain(leaf, [root], at=when, notes=notes)
    assert problems == [], problems  # before issue 15: "autorité absente du magasin de confiance"
    assert chain[-1] == root and any("SHA-1" in n for n in notes)


@pytest.fixture(scope="module")
def sha1_pki(tmp_path_factory):
    """A CA and a signer certificate, both signed with SHA-1, made by openssl (cryptography refuses)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl absent (paquet Debian openssl)")
    d = tmp_path_factory.mktemp("sha1")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-sha1",
        "-days", "3650", "-subj", "/CN=AC Test SHA1/O=DGFiP test",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
        "-subj", "/CN=Jeanne Signataire SHA1/title=Maire")
    (d / "ext.cnf").write_text("keyUsage=critical,digitalSignature,nonRepudiation\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "365", "-sha1", "-extfile", "ext.cnf")
    run("pkcs12", "-export", "-inkey", "leaf.key", "-in", "leaf.pem", "-certfile", "ca.pem",
        "-out", "leaf.p12", "-passout", "pass:secret-sha1")
    return d


def _openssl_accepts(d: Path, when: datetime) -> bool:
    out = subprocess.run(["openssl", "verify", "-attime", str(int(when.timestamp())), "-CAfile", "ca.pem",
                          "leaf.pem"], cwd=d, capture_output=True, text=True)
    return out.returncode == 0 and "OK" in out.stdout


def test_sha1_chain_accepted_when_openssl_accepts_it(sha1_pki):
    when = datetime.now(UTC)
    assert _openssl_accepts(sha1_pki, when), "openssl verify accepte cette chaîne SHA-1"
    pes = sign_pes(make_pes(1), sha1_pki / "leaf.p12", b"secret-sha1", role="Maire", signing_time=when)
    report = verify_pes(pes, trust_store=[sha1_pki / "ca.pem"], strict=True)
    assert report.intact
    assert "SIG-CERT-CHAINE" not in _rules(report)  # before: "autorité absente du magasin de confiance"
    weak = [f for f in report.all_findings if f.rule == "SIG-CERT-SHA1"]
    assert weak and all(f.severity == "warning" for f in weak) and "SHA-1" in weak[0].message
    assert report.ok  # even in strict mode: weak, not refused


def test_sha1_chain_with_wrong_ca_is_still_refused(sha1_pki, pki):
    pes = sign_pes(make_pes(1), sha1_pki / "leaf.p12", b"secret-sha1", role="Maire")
    report = verify_pes(pes, trust_store=[pki["ca"]], strict=True)  # another CA
    assert not report.ok and "SIG-CERT-CHAINE" in _rules(report)


# ---------------------------------------------------------------- policy digest without padding


def test_base64_comparison_ignores_padding_only():
    from flows.signature.verify import _same_base64

    value = "roF9+cfRHNPtVJolhdqfIqGMVuUXX8aR4rpiquf0u5E="
    assert _same_base64(value.rstrip("="), value) and _same_base64(value, value)
    assert not _same_base64(value[:-3] + "AA=", value) and not _same_base64("pas du base64 !", value)


def test_policy_digest_unpadded_in_a_signed_file(maire, pki, monkeypatch):
    """End to end: the signer writes the policy digest without '=', the verifier accepts it."""
    from flows.signature import dsig, xades

    patched = {k: dataclasses.replace(v, hash_value=v.hash_value.rstrip("=")) for k, v in xades.POLICIES.items()}
    monkeypatch.setattr(xades, "POLICIES", patched)
    pes = sign_pes(make_pes(1), *maire, role="Maire")
    assert b"=</ds:DigestValue></xad:SigPolicyHash>" not in pes.replace(b"\n", b"")
    report = verify_pes(pes, trust_store=[pki["ca"]], strict=True)
    assert "SIG-POLITIQUE" not in _rules(report), [f.message for f in report.all_findings]
    assert report.ok
    assert dsig.POLICY_BY_ID  # the verifier's own table is untouched


# ---------------------------------------------------------------- changed bordereau


def test_changed_bordereau_names_reference_and_bordereau(signed, pki):
    tampered = signed.replace(b"Fourniture n\xb01", b"Fourniture n\xb09", 1)
    assert tampered != signed
    report = verify_pes(tampered, trust_store=[pki["ca"]])
    assert not report.intact and not report.ok
    bad = [f for f in report.all_findings if f.rule == "SIG-EMPREINTE"]
    assert bad, [f.message for f in report.all_findings]
    text = bad[0].message
    assert "Contenu signé modifié" in text and "référence « #" in text and "bordereau" in text
    m = re.search(r"référence « #([^ ]+) »", text)
    assert m and m.group(1).startswith("BORD")
    assert bad[0].place.startswith("bordereau ")
    # the other bordereau is untouched and stays intact
    assert sum(1 for r in report.results if r.intact) == 1


def test_recomputed_digests_are_reported_as_changed_signed_content(signed, pki):
    """A tool that edits the bordereau and rewrites DigestValue: only SignatureValue fails,
    and the message still says the signed content changed and which bordereau."""
    from lxml import etree

    from flows import xmlsafe
    from flows.signature.dsig import canonicalize
    from flows.signature.verify import _Ctx, _reference_octets

    root = xmlsafe.parse_bytes(signed)
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    bord = root.find("PES_DepenseAller/Bordereau")
    obj = bord.find("Piece/BlocPiece/InfoPce/Obj")
    obj.set("V", obj.get("V") + " (modifié)")
    sig = bord.find(f"{ds}Signature")
    ctx = _Ctx(root, [], False, None, {})
    for ref in sig.findall(f"{ds}SignedInfo/{ds}Reference"):
        if ref.get("URI") == f"#{bord.get('Id')}":
            octets, problem, _target = _reference_octets(ref, sig, ctx)
            assert problem is None
            import hashlib

            ref.find(f"{ds}DigestValue").text = base64.b64encode(hashlib.sha256(octets).digest()).decode()
    assert canonicalize  # (imported for symmetry with the verifier)
    data = etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1")
    report = verify_pes(data, trust_store=[pki["ca"]])
    rules = _rules(report)
    assert "SIG-EMPREINTE" not in rules and "SIG-VALEUR" in rules
    msg = next(f.message for f in report.all_findings if f.rule == "SIG-VALEUR")
    assert "Contenu signé modifié" in msg and f"#{bord.get('Id')}" in msg
