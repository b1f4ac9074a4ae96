"""Building SEDA packages: schema validity in 2.1/2.2/2.3, order, digests, names, determinism, streaming."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from datetime import UTC, date, datetime

import pytest
from lxml import etree

from flows.archive import seda
from flows.archive.check import check_package
from flows.archive.formats import guess_format, name_key, unique_names
from flows.archive.schemas import seda_schema, validate_manifest
from flows.archive.seda import ArchiveFile, PackageError, build_package, build_package_to
from flows.config.models import ArchiveProfile, PlatformConfig

from .conftest import AGREEMENTS, acte_request, fake_pdf, pes_request, tar_members

VERSIONS = ["2.1", "2.2", "2.3"]


def _ns(version: str) -> dict[str, str]:
    return {"s": f"fr:gouv:culture:archivesdefrance:seda:v{version}"}


def _children(el) -> list[str]:
    return [etree.QName(c).localname for c in el]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
@pytest.mark.parametrize("make", [acte_request, pes_request], ids=["acte", "pes"])
def test_package_valid_against_official_schema(reference, version, fmt, make):
    request = make()
    pkg = build_package(request, version=version, fmt=fmt)
    assert validate_manifest(pkg.manifest, version, reference_dir=reference) == []
    # the same document through the schema object directly, so that a silent no-op validator cannot pass
    root = etree.fromstring(pkg.manifest)
    assert seda_schema(version, reference).validate(root)
    assert check_package(pkg.data, known_agreements=AGREEMENTS, version=version, reference_dir=reference) == []
    assert pkg.name == f"{pkg.message_identifier}.{fmt}"
    assert len(pkg.objects) == len(request.files)


def test_schema_rejects_a_broken_bordereau(reference, acte):
    pkg = build_package(acte, version="2.2")
    root = etree.fromstring(pkg.manifest)
    ns = _ns("2.2")
    # swap Date and MessageIdentifier: order matters in SEDA
    date_el = root.find("s:Date", ns)
    root.remove(date_el)
    root.find("s:MessageIdentifier", ns).addnext(date_el)
    findings = validate_manifest(etree.tostring(root), "2.2", reference_dir=reference)
    assert findings and findings[0].rule == "SEDA-XSD"
    assert "SEDA 2.2" in findings[0].message
    # a 2.2 bordereau declared as 2.1
    assert [f.rule for f in validate_manifest(pkg.manifest, "2.1", reference_dir=reference)] == ["SEDA-VERSION"]


def test_manifest_order_and_content(acte):
    pkg = build_package(acte, version="2.2", digest_algorithm="SHA-512")
    root = etree.fromstring(pkg.manifest)
    ns = _ns("2.2")
    assert _children(root) == [
        "Comment", "Date", "MessageIdentifier", "ArchivalAgreement", "CodeListVersions",
        "DataObjectPackage", "ArchivalAgency", "TransferringAgency",
    ]
    assert root.findtext("s:MessageIdentifier", namespaces=ns) == pkg.message_identifier
    assert pkg.message_identifier.startswith("DEMAT-040-213401234-20240102-2024_12-DE-")
    assert root.findtext("s:ArchivalAgreement", namespaces=ns) == "ACC-ACTES-040"
    assert root.findtext("s:Date", namespaces=ns) == "2024-01-08T09:30:00+00:00"
    dop = root.find("s:DataObjectPackage", ns)
    assert _children(dop) == ["BinaryDataObject"] * 6 + ["DescriptiveMetadata", "ManagementMetadata"]
    bdo = dop.find("s:BinaryDataObject", ns)
    assert _children(bdo) == ["DataObjectVersion", "Uri", "MessageDigest", "Size", "FormatIdentification", "FileInfo"]
    assert bdo.findtext("s:FileInfo/s:Filename", namespaces=ns) == "Délibération 2024_12.pdf"
    assert bdo.findtext("s:Uri", namespaces=ns) == "Content/Deliberation_2024_12.pdf"
    assert bdo.findtext("s:FormatIdentification/s:FormatId", namespaces=ns) == "fmt/354"  # PDF/A-1b from its XMP
    assert bdo.findtext("s:FileInfo/s:LastModified", namespaces=ns) == "2024-01-02T10:00:00+00:00"
    mm = dop.find("s:ManagementMetadata", ns)
    assert _children(mm) == [
        "ArchivalProfile", "LegalStatus", "OriginatingAgencyIdentifier", "SubmissionAgencyIdentifier",
        "AppraisalRule", "AccessRule",
    ]
    assert mm.findtext("s:OriginatingAgencyIdentifier", namespaces=ns) == "213401234"
    assert mm.findtext("s:AppraisalRule/s:FinalAction", namespaces=ns) == "Keep"
    assert mm.findtext("s:AppraisalRule/s:StartDate", namespaces=ns) == "2024-01-03"
    top = dop.find("s:DescriptiveMetadata/s:ArchiveUnit", ns)
    assert top.findtext("s:Content/s:DescriptionLevel", namespaces=ns) == "RecordGrp"
    assert top.findtext("s:Content/s:OriginatingAgency/s:Identifier", namespaces=ns) == "213401234"
    keywords = [k.text for k in top.iterfind("s:Content/s:Keyword/s:KeywordContent", ns)]
    assert "Commune de Saint-Étienne-d'Orthe" in keywords and "7.1 Décisions budgétaires" in keywords
    items = top.findall("s:ArchiveUnit", ns)
    assert len(items) == 6
    assert [i.findtext("s:DataObjectReference/s:DataObjectReferenceId", namespaces=ns) for i in items] == [
        f"BDO_{n:03d}" for n in range(1, 7)
    ]
    assert {i.findtext("s:Content/s:DescriptionLevel", namespaces=ns) for i in items} == {"Item"}
    assert "Accusé de réception" in [i.findtext("s:Content/s:DocumentType", namespaces=ns) for i in items]


def test_pes_destroy_and_formats(pes):
    pkg = build_package(pes, version="2.1")
    root = etree.fromstring(pkg.manifest)
    ns = _ns("2.1")
    assert root.findtext(".//s:ManagementMetadata/s:AppraisalRule/s:FinalAction", namespaces=ns) == "Destroy"
    assert root.find(".//s:ManagementMetadata/s:ArchivalProfile", ns) is None  # empty profile: not emitted
    formats = [b.findtext("s:FormatIdentification/s:FormatId", namespaces=ns) for b in root.iterfind(".//s:BinaryDataObject", ns)]
    assert formats == ["fmt/101", "fmt/101", "fmt/471"]


def test_version_specific_elements(acte):
    with_sig = acte_request(files=[*acte.files, ArchiveFile("Délibération 2024_12.pdf.p7s", b"0\x82\x01\x00sig", role="signature")])
    m23 = etree.fromstring(build_package(with_sig, version="2.3").manifest)
    m22 = etree.fromstring(build_package(with_sig, version="2.2").manifest)
    ns23, ns22 = _ns("2.3"), _ns("2.2")
    roles = [e.text for e in m23.iterfind(".//s:SigningInformation/s:SigningRole", ns23)]
    assert roles == ["SignedDocument", "Signature"]
    assert m23.find(".//s:SignedDocumentReferenceId", ns23).text == "AU_001"
    assert m23.find(".//s:BinaryDataObject/s:DataObjectUse", ns23).text == "BinaryMaster"
    assert m22.find(".//s:SigningInformation", ns22) is None  # does not exist before 2.3
    assert m22.find(".//s:DataObjectUse", ns22) is None


def test_version_specific_elements_are_schema_valid(reference, acte):
    with_sig = acte_request(files=[*acte.files, ArchiveFile("sig.p7s", b"0\x82sig", role="signature")])
    for version in VERSIONS:
        assert validate_manifest(build_package(with_sig, version=version).manifest, reference_dir=reference) == []


@pytest.mark.parametrize(
    "spelling,algo",
    [
        ("SHA-512", "sha512"),
        ("SHA-256", "sha256"),
        ("http://www.w3.org/2001/04/xmlenc#sha256", "sha256"),
        ("http://www.w3.org/2001/04/xmlenc#sha512", "sha512"),
    ],
)
def test_digest_spellings(reference, pes, spelling, algo):
    pkg = build_package(pes, digest_algorithm=spelling)
    root = etree.fromstring(pkg.manifest)
    ns = _ns("2.2")
    members = tar_members(pkg.data)
    for bdo in root.iterfind(".//s:BinaryDataObject", ns):
        md = bdo.find("s:MessageDigest", ns)
        assert md.get("algorithm") == spelling
        content = members[bdo.findtext("s:Uri", namespaces=ns)]
        assert md.text == hashlib.new(algo, content).hexdigest()
    assert check_package(pkg.data, known_agreements=AGREEMENTS, reference_dir=reference) == []


@pytest.mark.parametrize("spelling", ["MD5", "SHA-1", "CRC32", ""])
def test_weak_or_unknown_digest_refused(pes, spelling):
    with pytest.raises(PackageError, match="empreinte"):
        build_package(pes, digest_algorithm=spelling)


def test_names_unique_ignoring_accents_and_case(reference, acte):
    files = [
        ArchiveFile("Annexé.pdf", fake_pdf("a"), role="annexe"),
        ArchiveFile("annexe.PDF", fake_pdf("b"), role="annexe"),
        ArchiveFile("ANNEXE.pdf", fake_pdf("c"), role="annexe"),
        ArchiveFile("Anne\u0301xe.pdf", fake_pdf("d"), role="annexe"),  # é in NFD form
        ArchiveFile("../../etc/passwd", b"root:x:0:0", role="annexe"),
        ArchiveFile("œuvre «1».txt", b"texte", role="annexe"),
    ]
    pkg = build_package(acte_request(files=files))
    names = [o.name for o in pkg.objects]
    assert len({name_key(n) for n in names}) == len(names)
    assert names[:4] == ["Annexe.pdf", "annexe_2.PDF", "ANNEXE_3.pdf", "Annexe_4.pdf"]
    assert names[4] == "passwd" and names[5] == "oeuvre_1.txt"
    assert [o.original_name for o in pkg.objects] == [f.name for f in files]
    assert set(tar_members(pkg.data)) == {"manifest.xml", *(f"Content/{n}" for n in names)}
    assert check_package(pkg.data, known_agreements=AGREEMENTS, reference_dir=reference) == []


def test_unique_names_unit():
    assert unique_names(["a.pdf", "A.pdf", "á.PDF", "a_2.pdf"]) == ["a.pdf", "A_2.pdf", "a_3.PDF", "a_2_2.pdf"]
    assert name_key("E\u0301te\u0301.pdf") == name_key("Été.PDF") == "ete.pdf"


def test_deterministic_rebuild(acte, monkeypatch, tmp_path):
    first = build_package(acte)
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)  # a later clock changes nothing
    second = build_package(acte_request())
    assert first.data == second.data and first.sha256 == second.sha256
    assert first.message_identifier == second.message_identifier
    on_disk = build_package_to(tmp_path, acte)
    assert on_disk.path.read_bytes() == first.data and on_disk.sha256 == first.sha256
    assert on_disk.path.name == first.name
    # gzip header: fixed mtime (the transfer date), no file name
    assert first.data[4:8] == int(datetime(2024, 1, 8, 9, 30, tzinfo=UTC).timestamp()).to_bytes(4, "little")
    assert gzip.decompress(first.data)[:512].startswith(b"manifest.xml")
    assert first.data[3] & 0x08 == 0  # FNAME flag unset
    zip1 = build_package(acte, fmt="zip")
    zip2 = build_package(acte_request(), fmt="zip")
    assert zip1.data == zip2.data


def test_identifier_changes_with_content(acte):
    base = build_package(acte).message_identifier
    changed = acte_request(files=[*acte.files[:-1], ArchiveFile("journal.json", b"[]", role="journal")])
    assert build_package(changed).message_identifier != base
    assert build_package(acte, version="2.1").message_identifier != base
    assert build_package(acte, fmt="zip").message_identifier != base
    assert build_package(acte_request(transfer_date=datetime(2024, 2, 1, tzinfo=UTC))).message_identifier != base


def test_default_transfer_date_is_stable(acte):
    req = acte_request(transfer_date=None)
    a, b = build_package(req), build_package(req)
    assert a.data == b.data
    root = etree.fromstring(a.manifest)
    # the latest date the dossier carries: the document's 2024-01-02T10:00 < end date 2024-01-03
    assert root.findtext("s:Date", namespaces=_ns("2.2")) == "2024-01-03T00:00:00+00:00"


def test_streams_files_from_paths(reference, tmp_path):
    big = tmp_path / "gros document.pdf"
    with big.open("wb") as fh:
        fh.write(b"%PDF-1.5\n")
        for i in range(12):
            fh.write(hashlib.sha512(str(i).encode()).digest() * 16384)  # 12 MB, incompressible-ish
    out = tmp_path / "out"
    out.mkdir()
    req = acte_request(files=[ArchiveFile("gros document.pdf", big, role="document"),
                              ArchiveFile("note.txt", str(tmp_path / "note.txt"), role="annexe")])
    (tmp_path / "note.txt").write_text("une note", encoding="utf-8")
    pkg = build_package_to(out / "paquet.tar.gz", req, fmt="tar.gz")
    assert pkg.path == out / "paquet.tar.gz" and pkg.size == pkg.path.stat().st_size
    assert [p.name for p in out.iterdir()] == ["paquet.tar.gz"]  # no partial file left behind
    assert pkg.objects[0].size == big.stat().st_size
    assert pkg.objects[0].pronom == "fmt/19"
    assert check_package(pkg.path, known_agreements=AGREEMENTS, reference_dir=reference) == []
    zpkg = build_package_to(out / "paquet.zip", req, fmt="zip")
    with zipfile.ZipFile(zpkg.path) as zf:
        assert zf.namelist() == ["manifest.xml", "Content/gros_document.pdf", "Content/note.txt"]
        assert zf.testzip() is None
    assert check_package(zpkg.path, known_agreements=AGREEMENTS, reference_dir=reference) == []


def test_file_changed_during_build_is_refused(tmp_path, monkeypatch):
    doc = tmp_path / "acte.pdf"
    doc.write_bytes(fake_pdf("original"))
    real_scan = seda._scan

    def scan_then_modify(f, name, algo, default_date):
        scanned = real_scan(f, name, algo, default_date)
        doc.write_bytes(fake_pdf("modifié!"))  # same role, other content, other size
        return scanned

    monkeypatch.setattr(seda, "_scan", scan_then_modify)
    with pytest.raises(PackageError, match="a changé"):
        build_package_to(tmp_path / "p.tar.gz", acte_request(files=[ArchiveFile("acte.pdf", doc)]))
    assert not (tmp_path / "p.tar.gz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["acte.pdf"]


def test_empty_file_has_no_size(reference):
    pkg = build_package(pes_request(files=[ArchiveFile("vide.txt", b"", role="journal")]))
    root = etree.fromstring(pkg.manifest)
    assert root.find(".//s:BinaryDataObject/s:Size", _ns("2.2")) is None  # Size is a positiveInteger
    assert validate_manifest(pkg.manifest, reference_dir=reference) == []
    assert check_package(pkg.data, known_agreements=AGREEMENTS, reference_dir=reference) == []


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"files": []}, "aucun fichier"),
        ({"end_date": date(2023, 1, 1)}, "précède"),
        ({"files": [ArchiveFile("a.pdf", b"x", role="brouillon")]}, "rôle"),
        ({"collectivite_siren": "  "}, "SIREN"),
    ],
)
def test_bad_requests_refused(overrides, message):
    with pytest.raises(PackageError, match=message):
        build_package(acte_request(**overrides))


def test_bad_options_refused(acte):
    with pytest.raises(ValueError, match="version SEDA"):
        build_package(acte, version="2.0")
    with pytest.raises(PackageError, match="format"):
        build_package(acte, fmt="rar")


def test_options_from_config():
    cfg = PlatformConfig.model_validate(
        {"seda_version": "2.3", "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256", "package_format": "zip",
         "collectivites": []}
    )
    assert seda.options_from_config(cfg) == {
        "version": "2.3", "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256", "fmt": "zip"}


def test_metadata_text_cleaned(reference):
    req = pes_request(title="Titre\x07 avec contrôle\x00", comment="ligne\x1b", profile=ArchiveProfile(archival_agreement="ACC-HELIOS-040"))
    pkg = build_package(req)
    assert b"\x07" not in pkg.manifest and b"\x00" not in pkg.manifest
    assert validate_manifest(pkg.manifest, reference_dir=reference) == []


def test_guess_format():
    assert guess_format("a.pdf", fake_pdf("x", pdfa=True)).pronom == "fmt/354"
    assert guess_format("a.pdf", fake_pdf("x", "1.4")).pronom == "fmt/18"
    assert guess_format("a.pdf", fake_pdf("x", "1.7")).pronom == "fmt/276"
    assert guess_format("sans-extension", b"%PDF-1.6\n").mime == "application/pdf"
    assert guess_format("f.xml", b"<a/>").pronom == "fmt/101"
    assert guess_format("f.txt", b"abc").pronom == "x-fmt/111"
    assert guess_format("f.json", b"{}").pronom == "fmt/817"
    assert guess_format("f.bin", b"\x00\x01").mime == "application/octet-stream"


def test_pdfa_marker_split_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(seda, "CHUNK", 64)
    data = fake_pdf("x", "1.4", pdfa=True, padding=70)
    pkg = build_package(pes_request(files=[ArchiveFile("a.pdf", data)]))
    assert pkg.objects[0].pronom == "fmt/354"
    assert pkg.objects[0].digest == hashlib.sha512(data).hexdigest()
