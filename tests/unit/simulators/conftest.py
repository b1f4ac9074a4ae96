"""Fixtures for the counterparts' own rules: a demo PKI (the platform signs with it; the
simulators trust only its CA certificate), a second CA nobody trusts, and generated documents."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from simulators.counterparts import Counterpart, Decision, Incoming, Settings

COLL = dict(siret="21400293300015", idpost="040012", codcol="293", codbud="01")


@pytest.fixture(autouse=True)
def official_reference(monkeypatch):
    """The counterparts judge by the official schemas where the tests have them (CI: ../shared beside
    the checkout); nothing at run time looks for that folder by itself."""
    from tests.conftest import REFERENCE

    if REFERENCE.is_dir() and "DEMAT_REFERENCE_DIR" not in os.environ:
        monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(REFERENCE))


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict:
    from flows.signature.pki import create_demo_pki

    return create_demo_pki(tmp_path_factory.mktemp("pki"), [("maire", "Claire Dupré", "Maire")], ca_key_size=2048)


@pytest.fixture(scope="session")
def stranger_pki(tmp_path_factory) -> dict:
    """Another CA with the same names: a certificate the counterparts must not trust."""
    from flows.signature.pki import create_demo_pki

    return create_demo_pki(tmp_path_factory.mktemp("pki2"), [("maire", "Claire Dupré", "Maire")], ca_key_size=2048)


def sign(pki: dict, pes: bytes) -> bytes:
    from flows.signature.xades import sign_pes

    info = pki["officials"]["maire"]
    password = Path(info["password_file"]).read_bytes().strip()
    return sign_pes(pes, info["p12"], password, role="Maire", place="Saint-Sever")


def make_pes(nomfic: str = "PES_SIM_1", **kw) -> bytes:
    from flows.helios.generate import generate_pes

    return generate_pes(**{**COLL, "nomfic": nomfic, **kw})


def incoming(name: str, data: bytes, *, known=lambda key: False, **settings) -> Incoming:
    """One reception as the counterpart loop hands it to the rules (received now)."""
    return Incoming(name=name, data=data, sha256="0" * 64, rng=random.Random(0), settings=Settings(**settings),  # noqa: S311
                    reception_id=1, received_at=time.time(), known=known)


def through(counterpart: Counterpart, name: str, data: bytes) -> dict[str, bytes]:
    """Drop a file, let the counterpart process it and answer at once; its replies by name."""
    before = set(p.name for p in counterpart.retour.iterdir())
    (counterpart.depot / name).write_bytes(data)
    counterpart.poll_once()
    counterpart.deliver_due(now=1e12)
    return {p.name: p.read_bytes() for p in counterpart.retour.iterdir() if p.name not in before}


__all__ = ["COLL", "Decision", "incoming", "make_pes", "sign", "through"]
