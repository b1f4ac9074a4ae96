"""Fixtures for the Hélios tests: a collectivité's identifiers, the official schemas (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from flows import xmlsafe
from flows.helios.generate import generate_pes

# Commune de Saint-Sever (demo config): a SIRET with a valid key.
COLL = dict(siret="21400293300015", idpost="040012", codcol="293", codbud="01")


def make_pes(nomfic: str = "PES_TEST_0001", **kw) -> bytes:
    params = dict(COLL, nomfic=nomfic)
    params.update(kw)
    return generate_pes(**params)


def write(tmp_path: Path, data: bytes, name: str = "pes.xml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def samples(reference) -> Path:
    return reference / "helios" / "samples"


@pytest.fixture(scope="session")
def official_aller(reference) -> etree.XMLSchema:
    """The official DGFiP PES_Aller.xsd v5.30, compiled offline (all imports are local files)."""
    return xmlsafe.schema_from_file(reference / "helios" / "schemas" / "schemas_pes_v5.30" / "PES_V2" / "Rev0" / "PES_Aller.xsd")


@pytest.fixture(scope="session")
def official_acquit(reference) -> etree.XMLSchema:
    return xmlsafe.schema_from_file(
        reference / "helios" / "schemas" / "schemas_pes_v5.30" / "PES_V2" / "Rev0" / "PES_V2_Acquit_Autonome_V2.xsd"
    )


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, xmlsafe.parser(huge_tree=True))
