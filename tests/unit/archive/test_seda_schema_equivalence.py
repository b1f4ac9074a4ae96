"""The SEDA schema shipped with demat gives the official schema's verdict (issue 15).

demat and the SAE simulator judge bordereaux with schemas/seda/seda-2.N.xsd, written by the project,
so that a user's installation never needs the official files. This test proves the two agree on a
corpus: every message demat builds (ArchiveTransfer in 2.1 / 2.2 / 2.3 for actes and PES dossiers,
Acknowledgement, ArchiveTransferReply accepted, refused with events, with swapped identifiers), the
real samples of other systems, and systematic mutants of each: every element deleted, followed by an
unknown element, swapped with its next sibling, its text made empty or nonsensical; every attribute
removed; identifiers duplicated or dangling.
"""

from __future__ import annotations

import copy
import io
import zipfile
from datetime import date

import pytest
from lxml import etree

from flows.archive import schemas
from flows.archive.replies import build_acknowledgement, build_transfer_reply
from flows.archive.seda import ArchiveFile, build_package
from flows.config.models import ArchiveProfile

from .conftest import acte_request, fake_pdf, pes_request

VERSIONS = ("2.1", "2.2", "2.3")
BAD_TEXTS = ("", "pas une valeur ! 31/02", "-3")


def _official(reference, version: str) -> etree.XMLSchema:
    return schemas.seda_schema(version, reference)


def _project(version: str) -> etree.XMLSchema:
    return schemas.seda_schema(version, None) if schemas.default_reference_dir() is None else schemas._load_project(version)


def _messages(version: str) -> dict[str, bytes]:
    signed = acte_request(files=[
        ArchiveFile("deliberation.pdf", fake_pdf("d"), role="document"),
        ArchiveFile("deliberation.pdf.p7s", b"0\x82signature", role="signature"),
        ArchiveFile("vide.txt", b"", role="annexe"),
    ])
    bare = pes_request(profile=ArchiveProfile(archival_agreement="", dua_years=5), keywords=[("x", "genreform")])
    return {
        "transfert-acte": build_package(acte_request(), version=version).manifest,
        "transfert-pes": build_package(pes_request(), version=version, fmt="zip").manifest,
        "transfert-signe": build_package(signed, version=version).manifest,
        "transfert-sans-accord": build_package(bare, version=version).manifest,
        "accuse": build_acknowledgement("DEMAT-X-1", version, comment="reçu", date="2024-01-08T10:00:00+00:00"),
        "reponse-acceptee": build_transfer_reply("DEMAT-X-1", "000", "AE_2024_1", None, version,
                                                 date="2024-01-09T10:00:00Z"),
        "reponse-refusee": build_transfer_reply(
            "DEMAT-X-1", "200", None, "refus", version, date="2024-01-09T10:00:00Z",
            events=[{"EventType": "Contrôle", "Outcome": "KO", "OutcomeDetail": "SEDA-EMPREINTE",
                     "OutcomeDetailMessage": "empreinte fausse"}]),
        "reponse-inversee": build_transfer_reply("DEMAT-X-1", "000", "AE_2024_2", "ok", version, swap_identifiers=True,
                                                 date="2024-01-09T10:00:00Z"),
    }


def _mutants(data: bytes):
    """(label, bytes) for every systematic mutation of one message."""
    root = etree.fromstring(data)
    ns = etree.QName(root).namespace

    def elements(doc):
        return [e for e in doc.iter() if isinstance(e.tag, str)]

    for index, original in enumerate(elements(root)):
        path = root.getroottree().getpath(original)

        def fresh(index=index):
            doc = copy.deepcopy(root)
            return doc, elements(doc)[index]

        doc, el = fresh()
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)
            yield f"{path} supprimé", etree.tostring(doc)
            doc, el = fresh()
            el.addnext(etree.Element(f"{{{ns}}}ElementInconnu"))
            yield f"inconnu après {path}", etree.tostring(doc)
            doc, el = fresh()
            nxt = el.getnext()
            if nxt is not None and isinstance(nxt.tag, str) and etree.QName(nxt).localname != etree.QName(el).localname:
                el.addprevious(nxt)
                yield f"{path} échangé avec le suivant", etree.tostring(doc)
        if len(el) == 0:
            for bad in BAD_TEXTS:
                doc, el = fresh()
                el.text = bad
                yield f"{path} = {bad!r}", etree.tostring(doc)
        for attr in list(el.attrib):
            doc, el = fresh()
            del el.attrib[attr]
            yield f"{path} sans @{attr}", etree.tostring(doc)
            if not attr.startswith("{"):  # lxml itself refuses an invalid xml:id
                doc, el = fresh()
                el.set(attr, "1 pas-un-id")
                yield f"{path} @{attr} invalide", etree.tostring(doc)
    # identifiers: duplicated, dangling
    doc = copy.deepcopy(root)
    ids = [e for e in doc.iter() if isinstance(e.tag, str) and e.get("id")]
    if len(ids) >= 2:
        ids[1].set("id", ids[0].get("id"))
        yield "identifiant en double", etree.tostring(doc)
    doc = copy.deepcopy(root)
    refs = doc.xpath("//*[local-name()='DataObjectReferenceId']")
    if refs:
        refs[0].text = "INEXISTANT"
        yield "référence vers un objet absent", etree.tostring(doc)


def _verdict(schema: etree.XMLSchema, data: bytes) -> bool:
    return schema.validate(etree.fromstring(data))


@pytest.mark.parametrize("version", VERSIONS)
def test_project_schema_agrees_with_official_on_demat_messages_and_mutants(reference, version):
    official, project = _official(reference, version), _project(version)
    disagreements, counted, rejected = [], 0, 0
    for name, data in _messages(version).items():
        assert _verdict(official, data) and _verdict(project, data), f"{name} : message valide refusé"
        for label, mutant in _mutants(data):
            counted += 1
            expected = _verdict(official, mutant)
            rejected += not expected
            if _verdict(project, mutant) != expected:
                disagreements.append(f"{name} / {label} : officiel {'valide' if expected else 'refusé'}")
    assert counted > 1000 and rejected > counted // 3  # the corpus really exercises both verdicts
    assert disagreements == [], "\n".join(disagreements[:40])


def _sip_manifest(reference) -> bytes:
    with zipfile.ZipFile(io.BytesIO((reference / "seda" / "samples" / "SIP_OK_468.zip").read_bytes())) as zf:
        return zf.read("manifest.xml")


@pytest.mark.parametrize("name", ["Acknowledgement_2.1.xml", "ArchiveTransferReply_2.1_accepted.xml",
                                  "ArchiveTransfer_2.1.xml", "SIP_OK_468"])
def test_real_samples_same_verdict(reference, name):
    data = _sip_manifest(reference) if name == "SIP_OK_468" else (reference / "seda" / "samples" / name).read_bytes()
    version = schemas.version_of_namespace(etree.QName(etree.fromstring(data)).namespace)
    official, project = _official(reference, version), _project(version)
    assert _verdict(project, data) == _verdict(official, data) is True
    for label, mutant in _mutants(data):
        assert _verdict(project, mutant) == _verdict(official, mutant), f"{name} / {label}"


def test_product_uses_project_schema_without_reference(monkeypatch):
    """No DEMAT_REFERENCE_DIR: the shipped schema judges, and a wrong bordereau is still refused."""
    monkeypatch.delenv("DEMAT_REFERENCE_DIR", raising=False)
    assert schemas.default_reference_dir() is None
    assert schemas.seda_schema("2.2") is schemas._load_project("2.2")
    manifest = build_package(acte_request(start_date=date(2024, 1, 2)), version="2.2").manifest
    assert schemas.validate_manifest(manifest) == []
    broken = manifest.replace(b"<LegalStatus>Public Archive</LegalStatus>", b"<LegalStatus>Publique</LegalStatus>")
    findings = schemas.validate_manifest(broken)
    assert [f.rule for f in findings] == ["SEDA-XSD"] and "LegalStatus" in findings[0].message


def test_missing_project_schema_is_an_installation_fault(monkeypatch, tmp_path):
    """A lost schema file is reported as what it is, never as a file missing from the package."""
    from flows.archive.check import check_package, reply_code_for

    monkeypatch.delenv("DEMAT_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(schemas, "PROJECT_DIR", tmp_path)
    schemas._load_project.cache_clear()
    try:
        with pytest.raises(schemas.SchemaUnavailable, match="introuvable dans l'installation"):
            schemas.seda_schema("2.2")
        findings = check_package(build_package(acte_request()).data, known_agreements={"ACC-ACTES-040"})
    finally:
        schemas._load_project.cache_clear()
    assert [f.rule for f in findings] == ["SEDA-SCHEMA-INDISPONIBLE"]
    assert "installation" in findings[0].message and "absent" not in findings[0].message
    assert reply_code_for(findings) == "FATAL"
