from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flows.signature.certs import (
    CertificateRefused,
    build_chain,
    check_signing_certificate,
    days_until_expiry,
    load_signer,
    load_trust_store,
    password_env_name,
    read_password,
)
from flows.signature.pki import make_certificate

from .conftest import future, past


def test_wrong_password_is_refused_without_leaking(maire):
    p12, _ = maire
    with pytest.raises(CertificateRefused) as err:
        load_signer(p12, b"mot-de-passe-faux-123")
    assert "mot de passe incorrect" in str(err.value)
    assert "mot-de-passe-faux-123" not in str(err.value)
    assert err.value.__cause__ is None


def test_not_a_p12(tmp_path):
    bad = tmp_path / "x.p12"
    bad.write_bytes(b"not a pkcs12")
    with pytest.raises(CertificateRefused):
        load_signer(bad, b"x")
    with pytest.raises(CertificateRefused, match="illisible"):
        load_signer(tmp_path / "absent.p12", b"x")


def test_signer_repr_hides_key(maire):
    signer = load_signer(*maire)
    assert "PRIVATE" not in repr(signer) and "Jeanne" in repr(signer)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"not_before": past(400), "not_after": past(10)}, "a expiré"),
        ({"not_before": future(10), "days": 365}, "pas encore valide"),
        ({"usages": ()}, "aucun usage de clé"),
        ({"usages": ("key_encipherment",)}, "n'autorise pas la signature"),
        ({"is_ca": True}, "autorité de certification"),
        ({"extended_usages": [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]}, "usage étendu"),
    ],
)
def test_check_signing_certificate_refusals(ca, spare_key, kwargs, expected):
    _, cert = make_certificate("Paul Refusé", issuer=ca, key=spare_key, **kwargs)
    with pytest.raises(CertificateRefused, match=expected) as err:
        check_signing_certificate(cert)
    assert "Paul Refusé" in str(err.value)


def test_good_certificate_and_expiry_days(maire):
    cert = load_signer(*maire).cert
    check_signing_certificate(cert)
    assert 3 * 365 - 3 <= days_until_expiry(cert) <= 3 * 366
    with pytest.raises(CertificateRefused):
        check_signing_certificate(cert, at=future(3 * 366))


def test_read_password_env_then_file(tmp_path, monkeypatch):
    (tmp_path / "maire-1.pass").write_bytes(b"from-file\n")
    (tmp_path / "maire-1.pass").chmod(0o600)
    monkeypatch.delenv(password_env_name("maire-1"), raising=False)
    assert read_password("maire-1", tmp_path) == b"from-file"
    monkeypatch.setenv("DEMAT_P12_PASSWORD_MAIRE_1", "from-env")
    assert read_password("maire-1", tmp_path) == b"from-env"
    monkeypatch.delenv("DEMAT_P12_PASSWORD_MAIRE_1")
    with pytest.raises(CertificateRefused):
        read_password("absent", tmp_path)
    with pytest.raises(CertificateRefused):
        read_password("../etc/passwd", tmp_path)


def test_trust_store_from_rgs_zip(reference):
    certs = load_trust_store([reference / "helios" / "signature" / "CA_RGS3.zip"])
    assert len(certs) > 100
    names = {c.subject.rfc4514_string() for c in certs}
    assert any("Helios" in n or "DGFiP" in n or "Finances" in n.upper() for n in names)


def test_trust_store_pem_der_dir(tmp_path, pki, ca):
    pem = Path(pki["ca"])
    (tmp_path / "ca.der").write_bytes(ca[1].public_bytes(serialization.Encoding.DER))
    (tmp_path / "junk.cer").write_bytes(b"garbage")
    assert len(load_trust_store([pem])) == 1
    assert len(load_trust_store([tmp_path])) == 1  # junk skipped, DER read
    assert len(load_trust_store([pem, tmp_path])) == 1  # deduplicated


def test_build_chain(maire, ca, spare_key):
    cert = load_signer(*maire).cert
    chain, problems = build_chain(cert, [ca[1]])
    assert problems == [] and chain[-1] == ca[1]
    other_ca = make_certificate("AC pirate", is_ca=True, key=spare_key)
    _, problems = build_chain(cert, [other_ca[1]])
    assert problems and "absente du magasin" in problems[0]
    # a CA with the same name but another key does not count
    impostor = make_certificate(ca[1].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value, is_ca=True, key=spare_key)
    _, problems = build_chain(cert, [impostor[1]])
    assert problems


def test_password_never_logged(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("DEMAT_P12_PASSWORD_ELU", raising=False)
    (tmp_path / "elu.pass").write_bytes(b"tres-secret-42\n")
    (tmp_path / "elu.pass").chmod(0o644)
    with caplog.at_level("DEBUG"):
        assert read_password("elu", tmp_path) == b"tres-secret-42"
    assert "chmod 600" in caplog.text  # permissive file is reported...
    assert "tres-secret-42" not in caplog.text  # ...without its content
