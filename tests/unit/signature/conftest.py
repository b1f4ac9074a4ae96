"""Fixtures: one demo PKI per test session, helpers to forge bad certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flows.signature.pki import create_demo_pki, make_certificate, new_rsa_key, write_pkcs12

OFFICIALS = [("maire", "Jeanne Dupré", "Maire"), ("adjoint", "Luc Martin", "Adjoint aux finances")]


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict:
    return create_demo_pki(tmp_path_factory.mktemp("pki"), OFFICIALS, ca_key_size=2048)


@pytest.fixture(scope="session")
def maire(pki) -> tuple[str, bytes]:
    info = pki["officials"]["maire"]
    return info["p12"], Path(info["password_file"]).read_bytes().strip()


@pytest.fixture(scope="session")
def ca(pki):
    d = Path(pki["directory"])
    key = serialization.load_pem_private_key((d / "ca-key.pem").read_bytes(), (d / "ca.pass").read_bytes().strip())
    cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    return key, cert


@pytest.fixture(scope="session")
def spare_key():
    return new_rsa_key(2048)


@pytest.fixture(scope="session")
def forge(ca, spare_key, tmp_path_factory):
    """forge(name, **make_certificate kwargs) -> (p12 path, password) signed by the demo CA."""
    out = tmp_path_factory.mktemp("forged")

    def _forge(label: str, *, issuer=ca, **kwargs) -> tuple[Path, bytes]:
        kwargs.setdefault("key", spare_key)
        key, cert = make_certificate(label, issuer=issuer, role="Maire", **kwargs)
        chain = [issuer[1]] if issuer else []
        path = write_pkcs12(out / f"{label}.p12", key, cert, chain, b"secret-de-test")
        return path, b"secret-de-test"

    return _forge


def past(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def future(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)
