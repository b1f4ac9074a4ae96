"""Fixtures for the @ctes tests: a collectivité, the official schema (from ../shared/reference)."""

from __future__ import annotations

from datetime import date

import pytest
from lxml import etree

from flows.config.models import Collectivite

DAY = date(2025, 3, 20)


def make_collectivite(**over) -> Collectivite:
    data = dict(slug="saint-sever", name="Commune de Saint-Sever", siren="214002933", siret="21400293300015",
                departement="040", arrondissement=2, nature="31", email="secretariat@saint-sever.fr",
                flows=["actes"])
    data.update(over)
    return Collectivite(**data)


@pytest.fixture
def collectivite() -> Collectivite:
    return make_collectivite()


@pytest.fixture(scope="session")
def samples(reference):
    return reference / "actes" / "samples"


@pytest.fixture(scope="session")
def official_schema(reference) -> etree.XMLSchema:
    """The official actesv1_1.xsd, loaded offline (its imports are local files)."""
    return etree.XMLSchema(etree.parse(str(reference / "actes" / "schemas" / "actesv1_1.xsd")))


def official_errors(schema: etree.XMLSchema, data: bytes) -> list[str]:
    doc = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    return [] if schema.validate(doc) else [str(e) for e in schema.error_log]
