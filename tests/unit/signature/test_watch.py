"""Certificate expiry watch: real PKCS#12 files made by the demo PKI helpers, real SSH keys."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flows.signature.pki import create_ssh_keypair, make_certificate, write_pkcs12, write_private
from flows.signature.watch import certificates_expiring

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def authority():
    return make_certificate("AC test veille", is_ca=True, days=3650)


def _official(directory: Path, ident: str, name: str, authority, *, not_after: datetime, password=b"s3cret-pw") -> None:
    key, cert = make_certificate(name, issuer=authority, role="Maire", not_before=NOW - timedelta(days=800),
                                 not_after=not_after)
    write_pkcs12(directory / f"{ident}.p12", key, cert, [authority[1]], password)
    write_private(directory / f"{ident}.pass", password + b"\n")


@pytest.fixture
def pki(tmp_path, authority) -> Path:
    d = tmp_path / "pki"
    d.mkdir()
    _official(d, "expire", "Paul Expiré", authority, not_after=NOW - timedelta(days=2))
    _official(d, "bientot", "Anne Bientôt", authority, not_after=NOW + timedelta(days=10, hours=1))
    _official(d, "tranquille", "Marc Tranquille", authority, not_after=NOW + timedelta(days=400))
    return d


def test_expired_and_soon_are_reported_in_french_long_ones_are_not(pki, caplog):
    with caplog.at_level(logging.WARNING):
        alerts = certificates_expiring(pki, within_days=30)
    by_subject = {a.subject: a for a in alerts}
    assert set(by_subject) == {"Paul Expiré", "Anne Bientôt"}
    assert by_subject["Paul Expiré"].expired and "a expiré le" in by_subject["Paul Expiré"].message
    soon = by_subject["Anne Bientôt"]
    assert soon.level == "bientot" and soon.days_left == 10
    assert "expire le" in soon.message and "dans 10 jour(s)" in soon.message and "renouveler" in soon.message
    assert [a.subject for a in alerts] == ["Paul Expiré", "Anne Bientôt"]  # soonest first
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in repr(alerts)
    assert certificates_expiring(pki, within_days=500)[-1].subject == "Marc Tranquille"
    assert [a.subject for a in certificates_expiring(pki, within_days=0)] == ["Paul Expiré"]


def test_wrong_password_and_env_password(pki, monkeypatch):
    (pki / "bientot.pass").write_bytes(b"mauvais\n")
    alerts = {a.source: a for a in certificates_expiring(pki)}
    assert alerts["bientot.p12"].level == "illisible" and "mot de passe incorrect" in alerts["bientot.p12"].message
    monkeypatch.setenv("DEMAT_P12_PASSWORD_BIENTOT", "s3cret-pw")  # the environment wins over the file
    alerts = {a.source: a for a in certificates_expiring(pki)}
    assert alerts["bientot.p12"].level == "bientot"


def test_ca_expiring_and_missing_official_certificate(tmp_path):
    from flows.config import load_config
    from flows.settings import REPO, Settings

    d = tmp_path / "pki"
    d.mkdir()
    ca = make_certificate("AC bientôt périmée", is_ca=True, not_before=NOW - timedelta(days=3000),
                          not_after=NOW + timedelta(days=5))
    (d / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    _official(d, "maire-saint-sever", "Claire Dupré", ca, not_after=NOW + timedelta(days=4))
    s = Settings(state_dir=tmp_path, config_path=REPO / "flows" / "config" / "demo.yaml", database_url="",
                 store_root=str(tmp_path / "store"), inbox_root=tmp_path / "inbox", pki_dir=d, reference_dir=tmp_path)
    alerts = certificates_expiring(s)
    kinds = sorted((a.subject, a.usage, a.level) for a in alerts)
    assert ("AC bientôt périmée", "d'autorité de certification", "bientot") in kinds
    assert sum(a.subject == "AC bientôt périmée" for a in alerts) == 1  # the CA is reported once
    assert ("Claire Dupré", "de signature", "bientot") in kinds
    assert ("president-chalosse-tursan", "de signature", "illisible") in kinds  # no .p12 for this official
    cfg_alerts = certificates_expiring(load_config(REPO / "flows" / "config" / "demo.yaml"), pki_dir=d)
    assert len(cfg_alerts) == len(alerts)


def test_ssh_client_key_plain_ed25519_is_skipped_certificate_is_watched(tmp_path):
    key_path, _pub = create_ssh_keypair(tmp_path / "id_ed25519")
    assert certificates_expiring(tmp_path / "vide", ssh_keys=[key_path]) == []  # no expiry for a plain key
    user_key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
    ca_key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        serialization.SSHCertificateBuilder()
        .public_key(user_key.public_key())
        .serial(1)
        .type(serialization.SSHCertificateType.USER)
        .key_id(b"demat-client")
        .valid_principals([b"demat"])
        .valid_after(int((NOW - timedelta(days=1)).timestamp()))
        .valid_before(int((NOW + timedelta(days=7, hours=1)).timestamp()))
        .sign(ca_key)
    )
    key_path.with_name(key_path.name + "-cert.pub").write_bytes(cert.public_bytes())
    alerts = certificates_expiring(tmp_path / "vide", ssh_keys=[key_path])
    assert len(alerts) == 1 and alerts[0].usage == "client SFTP" and alerts[0].days_left == 7
    assert "demat-client" in alerts[0].message and "SFTP" in alerts[0].message
    raw = key_path.read_text()
    assert raw.split("\n")[1] not in repr(alerts)  # no key material anywhere
