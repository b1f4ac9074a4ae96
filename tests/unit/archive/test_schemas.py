"""The official schemas load offline (W3C imports mapped to local copies), from the reference directory."""

from __future__ import annotations

import shutil
import socket

import pytest

from flows.archive import schemas
from flows.archive.schemas import SchemaUnavailable, seda_schema, validate_manifest, version_of_namespace


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("accès réseau pendant le chargement des schémas")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    schemas._load.cache_clear()
    yield
    schemas._load.cache_clear()


@pytest.mark.parametrize("version", ["2.1", "2.2", "2.3"])
def test_loads_offline(reference, no_network, version):
    schema = seda_schema(version, reference)
    assert schema is seda_schema(version, reference)  # cached


def test_env_variable_and_default(reference, monkeypatch, tmp_path):
    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(reference))
    assert schemas.default_reference_dir() == reference
    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(tmp_path))
    with pytest.raises(SchemaUnavailable, match="DEMAT_REFERENCE_DIR"):
        seda_schema("2.2")
    monkeypatch.delenv("DEMAT_REFERENCE_DIR")
    assert schemas.default_reference_dir() is None  # the product never looks beside the checkout


def test_missing_w3c_copy_is_not_fetched(reference, tmp_path, no_network):
    # the SEDA schemas without the W3C copies: must fail cleanly, never go to www.w3.org
    shutil.copytree(reference / "seda" / "schemas", tmp_path / "seda" / "schemas")
    with pytest.raises(SchemaUnavailable, match="xml.xsd"):
        seda_schema("2.2", tmp_path)


def test_validate_manifest_inputs(reference):
    assert [f.rule for f in validate_manifest(b"<a", reference_dir=reference)] == ["SEDA-XML"]
    assert [f.rule for f in validate_manifest(b"<a/>", reference_dir=reference)] == ["SEDA-VERSION"]
    findings = validate_manifest(b'<ArchiveTransfer xmlns="fr:gouv:culture:archivesdefrance:seda:v2.3"/>', reference_dir=reference)
    assert findings and {f.rule for f in findings} == {"SEDA-XSD"}
    assert version_of_namespace("fr:gouv:culture:archivesdefrance:seda:v2.3") == "2.3"
    assert version_of_namespace("fr:gouv:culture:archivesdefrance:seda:v1.0") is None
    with pytest.raises(ValueError):
        seda_schema("3.0", reference)


def test_local_w3c_copy_is_the_one_read(reference, tmp_path):
    # libxml2 fetches with its own C sockets: prove the mapping by breaking the local copy
    shutil.copytree(reference / "seda", tmp_path / "seda")
    (tmp_path / "seda" / "w3c" / "xml.xsd").write_text("<pas-un-schema", encoding="utf-8")
    with pytest.raises(SchemaUnavailable, match="illisible"):
        seda_schema("2.1", tmp_path)


@pytest.mark.parametrize("name", ["Acknowledgement_2.1.xml", "ArchiveTransferReply_2.1_accepted.xml", "ArchiveTransfer_2.1.xml"])
def test_real_samples_valid(reference, name):
    data = (reference / "seda" / "samples" / name).read_bytes()
    assert validate_manifest(data, "2.1", reference_dir=reference) == []
    assert [f.rule for f in validate_manifest(data, "2.3", reference_dir=reference)] == ["SEDA-VERSION"]
