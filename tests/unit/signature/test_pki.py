from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from flows.signature.certs import check_signing_certificate, load_signer
from flows.signature.pki import create_demo_pki, create_ssh_keypair

from .conftest import OFFICIALS


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_demo_pki_files_modes_and_subjects(pki):
    d = Path(pki["directory"])
    assert Path(pki["ca"]).is_file()
    ca = x509.load_pem_x509_certificate(Path(pki["ca"]).read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    for oid, name, role in OFFICIALS:
        info = pki["officials"][oid]
        assert _mode(info["p12"]) == 0o600 and _mode(info["password_file"]) == 0o600
        signer = load_signer(info["p12"], Path(info["password_file"]).read_bytes().strip())
        cert = signer.cert
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert cert.subject.get_attributes_for_oid(NameOID.TITLE)[0].value == role
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and ku.content_commitment and not ku.key_cert_sign
        assert 3 * 365 - 2 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 3 * 366
        cert.verify_directly_issued_by(ca)
        check_signing_certificate(cert)
    assert _mode(d / "ca-key.pem") == 0o600 and _mode(d / "ca.pass") == 0o600
    assert _mode(d) == 0o700


def test_result_holds_no_secret(pki):
    text = repr(pki)
    for oid, _, _ in OFFICIALS:
        password = Path(pki["officials"][oid]["password_file"]).read_bytes().strip().decode()
        assert password not in text


def test_idempotent_reuse_then_renew_broken(tmp_path):
    first = create_demo_pki(tmp_path, OFFICIALS[:1], ca_key_size=2048)
    p12 = Path(first["officials"]["maire"]["p12"]).read_bytes()
    second = create_demo_pki(tmp_path, OFFICIALS[:1], ca_key_size=2048)
    assert second["created"] == [] and set(second["reused"]) == {"ca", "maire"}
    assert Path(second["officials"]["maire"]["p12"]).read_bytes() == p12
    # role changed -> new certificate for that official only, CA kept
    third = create_demo_pki(tmp_path, [("maire", "Jeanne Dupré", "Maire honoraire")], ca_key_size=2048)
    assert third["created"] == ["maire"] and "ca" in third["reused"]
    # corrupted password file -> certificate re-created, not a crash
    Path(third["officials"]["maire"]["password_file"]).write_bytes(b"wrong\n")
    fourth = create_demo_pki(tmp_path, [("maire", "Jeanne Dupré", "Maire honoraire")], ca_key_size=2048)
    assert fourth["created"] == ["maire"]


@pytest.mark.parametrize("bad", ["../evil", "a/b", "", "x" * 80, "é"])
def test_official_id_must_be_a_safe_file_name(tmp_path, bad):
    with pytest.raises(ValueError, match="Identifiant"):
        create_demo_pki(tmp_path, [(bad, "Nom", "Maire")], ca_key_size=2048)


def test_ssh_keypair(tmp_path):
    key_path, pub_path = create_ssh_keypair(tmp_path / "keys" / "id_demat")
    assert _mode(key_path) == 0o600
    key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
    assert key_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    line = pub_path.read_text()
    assert line.startswith("ssh-ed25519 ")
    pub = serialization.load_ssh_public_key(line.encode())
    assert pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    again = create_ssh_keypair(tmp_path / "keys" / "id_demat")
    assert again[0].read_bytes() == key_path.read_bytes()
