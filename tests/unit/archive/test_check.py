"""What the SAE checks: good packages pass, corrupted or hostile ones are refused with clear reasons."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile

import pytest

from flows.archive.check import Limits, check_package, read_package, reply_code_for
from flows.archive.seda import ArchiveFile, build_package
from flows.findings import UnreadableFile

from .conftest import AGREEMENTS, acte_request, fake_pdf, make_tar_gz, repack, tar_members


def rules(findings) -> list[str]:
    return [f.rule for f in findings]


@pytest.fixture
def pkg(acte):
    return build_package(acte, version="2.2")


def check(data, reference, **kw):
    kw.setdefault("known_agreements", AGREEMENTS)
    return check_package(data, reference_dir=reference, **kw)


def first_content(pkg) -> str:
    return f"Content/{pkg.objects[0].name}"


def test_good_packages_accepted(reference, pkg, pes):
    assert check(pkg.data, reference) == []
    assert check(build_package(pes, version="2.3", fmt="zip").data, reference) == []
    assert reply_code_for([]) == "000"


def test_real_sip_accepted_and_read(reference):
    sip = (reference / "seda" / "samples" / "SIP_OK_468.zip").read_bytes()
    assert check(sip, reference, known_agreements={"ArchivalAgreementWithProfil"}) == []
    assert rules(check(sip, reference)) == ["SEDA-ACCORD-INCONNU"]
    summary = read_package(sip)
    assert summary["format"] == "zip" and summary["version"] == "2.1"
    assert summary["message_identifier"] == "20161012002"
    assert summary["archival_agreement"] == "ArchivalAgreementWithProfil"
    assert summary["archival_agency"] == "FRAD01" and summary["originating_agency"] == "DGFIP"
    assert [u["id"] for u in summary["units"]] == ["ID01", "ID02", "ID03", "ID04", "ID05"]
    assert [u["depth"] for u in summary["units"]] == [0, 1, 2, 3, 3]
    assert summary["units"][3]["objects"] == ["ID51"]
    objs = {o["id"]: o for o in summary["objects"]}
    assert objs["ID1"]["uri"] == "Content/cad_2005_010_BATI.pdf" and objs["ID1"]["size"] == 29403
    assert objs["ID1"]["in_package"] and objs["ID1"]["size_in_package"] == 29403
    assert objs["ID1"]["algorithm"] == "SHA-512" and objs["ID1"]["digest"].startswith("942bb63c")
    assert objs["ID1"]["format_id"] == "fmt/18"
    assert {f["name"] for f in summary["files"]} == {
        "manifest.xml", "Content/cad_2005_010_BATI.pdf", "Content/documentation_prop_batie.pdf"}


def test_read_package_of_ours(pkg):
    s = read_package(pkg.data)
    assert s["message_identifier"] == pkg.message_identifier and s["format"] == "tar.gz"
    assert s["units"][0]["level"] == "RecordGrp" and len(s["units"]) == 7
    assert all(o["in_package"] for o in s["objects"])
    assert [o["digest"] for o in s["objects"]] == [o.digest for o in pkg.objects]


def test_digest_changed(reference, pkg):
    name = first_content(pkg)
    content = tar_members(pkg.data)[name]
    tampered = content[:-2] + (b"X" if content[-2:-1] != b"X" else b"Y") + content[-1:]  # same size
    findings = check(repack(pkg.data, replace={name: tampered}), reference)
    assert rules(findings) == ["SEDA-EMPREINTE"]
    assert "empreinte" in findings[0].message and "BDO_001" in findings[0].place
    assert reply_code_for(findings) == "200"


def test_size_changed(reference, pkg):
    name = first_content(pkg)
    content = tar_members(pkg.data)[name]
    findings = check(repack(pkg.data, replace={name: content + b"\n"}), reference)
    assert rules(findings) == ["SEDA-TAILLE", "SEDA-EMPREINTE"]
    assert f"{len(content)} octets" in findings[0].message


def test_file_missing(reference, pkg):
    findings = check(repack(pkg.data, drop={first_content(pkg)}), reference)
    assert rules(findings) == ["SEDA-FICHIER-ABSENT"]
    assert findings[0].value == first_content(pkg) and "absent" in findings[0].message


def test_extra_file(reference, pkg):
    findings = check(repack(pkg.data, add=[("Content/en_trop.pdf", b"%PDF-1.4")]), reference)
    assert rules(findings) == ["SEDA-FICHIER-NON-REFERENCE"]
    assert findings[0].value == "Content/en_trop.pdf"


def test_unknown_or_missing_agreement(reference, pkg, acte):
    findings = check(pkg.data, reference, known_agreements={"AUTRE"})
    assert rules(findings) == ["SEDA-ACCORD-INCONNU"] and findings[0].value == "ACC-ACTES-040"
    assert reply_code_for(findings) == "300"
    from flows.config.models import ArchiveProfile

    no_agreement = build_package(acte_request(profile=ArchiveProfile(archival_agreement="")))
    assert rules(check(no_agreement.data, reference)) == ["SEDA-ACCORD-ABSENT"]


@pytest.mark.parametrize("evil", ["../evil.sh", "Content/../../evil.sh", "/etc/cron.d/evil", "C:/evil.bat", "Content\\..\\evil"])
def test_path_traversal_refused(reference, pkg, evil):
    findings = check(repack(pkg.data, add=[(evil, b"#!/bin/sh\nrm -rf /\n")]), reference)
    assert rules(findings) == ["SEDA-CHEMIN-DANGEREUX"]
    assert findings[0].value == evil
    assert reply_code_for(findings) == "101"


def test_links_refused(reference, pkg):
    link = tarfile.TarInfo("Content/lien.pdf")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/shadow"
    hard = tarfile.TarInfo("Content/dur.pdf")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "manifest.xml"
    members = list(tar_members(pkg.data).items())
    findings = check(make_tar_gz([*members, link, hard]), reference)
    assert rules(findings) == ["SEDA-LIEN", "SEDA-LIEN"]


def test_manifest_missing_or_nested(reference, pkg):
    findings = check(repack(pkg.data, drop={"manifest.xml"}), reference)
    assert rules(findings) == ["SEDA-MANIFESTE-ABSENT", ] and "racine" in findings[0].message
    nested = repack(pkg.data, rename={"manifest.xml": "paquet/manifest.xml"})
    findings = check(nested, reference)
    assert rules(findings) == ["SEDA-MANIFESTE-ABSENT"] and "paquet/manifest.xml" in findings[0].message
    with pytest.raises(UnreadableFile):
        read_package(nested)


def test_manifest_hostile_or_invalid(reference, pkg):
    doctype = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    assert rules(check(repack(pkg.data, replace={"manifest.xml": doctype}), reference)) == ["SEDA-MANIFESTE-ILLISIBLE"]
    assert rules(check(repack(pkg.data, replace={"manifest.xml": b"<a"}), reference)) == ["SEDA-MANIFESTE-ILLISIBLE"]
    broken = pkg.manifest.replace(b"<ArchivalAgency>", b"<Archival>").replace(b"</ArchivalAgency>", b"</Archival>")
    findings = check(repack(pkg.data, replace={"manifest.xml": broken}), reference)
    assert rules(findings) == ["SEDA-XSD"] and "SEDA 2.2" in findings[0].message
    assert reply_code_for(findings) == "101"
    assert rules(check(pkg.data, reference, version="2.1")) == ["SEDA-VERSION"]


def test_names_colliding_ignoring_accents(reference, acte):
    two = acte_request(files=[ArchiveFile("Acte.pdf", fake_pdf("a")), ArchiveFile("autre.pdf", fake_pdf("b"))])
    pkg = build_package(two)
    manifest = pkg.manifest.replace(b"Content/autre.pdf", "Content/acté.PDF".encode())
    data = repack(pkg.data, replace={"manifest.xml": manifest}, rename={"Content/autre.pdf": "Content/acté.PDF"})
    findings = check(data, reference)
    assert rules(findings) == ["SEDA-NOM-DOUBLON"]
    assert "Content/Acte.pdf" in findings[0].value and "Content/acté.PDF" in findings[0].value


def test_unknown_digest_algorithm(reference, pkg):
    manifest = pkg.manifest.replace(b'algorithm="SHA-512"', b'algorithm="WHIRLPOOL"', 1)
    findings = check(repack(pkg.data, replace={"manifest.xml": manifest}), reference)
    assert rules(findings) == ["SEDA-ALGORITHME"] and findings[0].value == "WHIRLPOOL"


def test_weak_algorithm_warned(reference, acte):
    import hashlib

    pkg = build_package(acte_request(files=[ArchiveFile("a.pdf", fake_pdf("a"))]))
    digest = pkg.objects[0].digest
    manifest = pkg.manifest.replace(b'algorithm="SHA-512"', b'algorithm="SHA-1"').replace(
        digest.encode(), hashlib.sha1(tar_members(pkg.data)["Content/a.pdf"]).hexdigest().encode())
    findings = check(repack(pkg.data, replace={"manifest.xml": manifest}), reference)
    assert rules(findings) == ["SEDA-ALGORITHME-FAIBLE"] and findings[0].severity == "warning"
    assert reply_code_for(findings) == "000"


def test_zip_corrupted_data_and_lying_size(reference, acte):
    pkg = build_package(acte, fmt="zip")
    data = bytearray(pkg.data)
    with zipfile.ZipFile(io.BytesIO(pkg.data)) as zf:
        info = zf.getinfo(f"Content/{pkg.objects[1].name}")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    corrupted = bytearray(data)
    corrupted[start + 5] ^= 0xFF
    findings = check(bytes(corrupted), reference)
    assert "SEDA-ARCHIVE-CORROMPUE" in rules(findings)
    # central directory says the file is 3 bytes shorter than it is
    lying = bytearray(data)
    pos = 0
    while True:
        pos = lying.find(b"PK\x01\x02", pos)
        fname_len = struct.unpack("<H", lying[pos + 28: pos + 30])[0]
        if lying[pos + 46: pos + 46 + fname_len] == info.filename.encode():
            break
        pos += 4
    real = struct.unpack("<I", lying[pos + 24: pos + 28])[0]
    lying[pos + 24: pos + 28] = struct.pack("<I", real - 3)
    findings = check(bytes(lying), reference)
    assert {"SEDA-TAILLE", "SEDA-ARCHIVE-CORROMPUE"} <= set(rules(findings))


def test_tar_lying_size_and_truncation(reference, pkg):
    members = tar_members(pkg.data)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        ti = tarfile.TarInfo("manifest.xml")
        ti.size = len(members["manifest.xml"])
        tar.addfile(ti, io.BytesIO(members["manifest.xml"]))
    body = raw.getvalue().rstrip(b"\0")
    body += b"\0" * (-len(body) % 512)
    liar = tarfile.TarInfo(first_content(pkg))
    liar.size = 50_000_000  # declares 50 MB, carries 100 bytes
    body += liar.tobuf(tarfile.PAX_FORMAT) + b"A" * 100
    findings = check(gzip.compress(body), reference)
    assert "SEDA-ARCHIVE-CORROMPUE" in rules(findings)
    findings = check(pkg.data[: len(pkg.data) // 2], reference)
    assert rules(findings) == ["SEDA-ARCHIVE-CORROMPUE"]
    findings = check(pkg.data[:-40], reference)  # only the end lost: the manifest reads, files do not
    assert "SEDA-ARCHIVE-CORROMPUE" in rules(findings) and "SEDA-MANIFESTE-ABSENT" not in rules(findings)


def test_bombs_refused(reference, pkg):
    zeros = b"\0" * (3 * 1024 * 1024)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.xml", pkg.manifest)
        zf.writestr("Content/zeros.bin", zeros)
    findings = check(buf.getvalue(), reference, limits=Limits(ratio_floor=1024 * 1024))
    assert rules(findings) == ["SEDA-BOMBE"] and "compression" in findings[0].message
    tgz = make_tar_gz([("manifest.xml", pkg.manifest), ("Content/zeros.bin", zeros)])
    assert rules(check(tgz, reference, limits=Limits(max_total_bytes=2 * 1024 * 1024))) == ["SEDA-BOMBE"]
    assert rules(check(tgz, reference, limits=Limits(ratio_floor=1024 * 1024))) == ["SEDA-BOMBE"]
    many = make_tar_gz([("manifest.xml", pkg.manifest)] + [(f"Content/{i}.txt", b"x") for i in range(30)])
    assert rules(check(many, reference, limits=Limits(max_members=20))) == ["SEDA-BOMBE"]


@pytest.mark.parametrize("data", [b"", b"garbage that is no archive", gzip.compress(b"not a tar" * 100)])
def test_unreadable_archives(reference, data):
    findings = check(data, reference)
    assert rules(findings) == ["SEDA-ARCHIVE-ILLISIBLE"] and findings[0].message
    assert reply_code_for(findings) == "101"


def test_reads_from_path(reference, pkg, tmp_path):
    p = tmp_path / pkg.name
    p.write_bytes(pkg.data)
    assert check(p, reference) == [] and check(str(p), reference) == []
    assert read_package(p)["message_identifier"] == pkg.message_identifier
    assert rules(check(tmp_path / "absent.tar.gz", reference)) == ["SEDA-ARCHIVE-ILLISIBLE"]


def test_schema_unavailable_is_reported(pkg, tmp_path):
    findings = check_package(pkg.data, known_agreements=AGREEMENTS, reference_dir=tmp_path)
    assert rules(findings) == ["SEDA-SCHEMA-INDISPONIBLE"] and "DEMAT_REFERENCE_DIR" in findings[0].message


def test_messages_are_french_text(reference, pkg):
    findings = check(repack(pkg.data, drop={first_content(pkg)}, add=[("../x", b"x")]), reference)
    text = "\n".join(f.to_text() for f in findings)
    assert "Entrée refusée" in text and "absent du paquet" in text and "Correction :" in text


def test_gzip_trailer_and_hidden_data(reference, pkg):
    assert rules(check(pkg.data[:-4], reference)) == ["SEDA-ARCHIVE-CORROMPUE"]  # gzip length lost
    bad_crc = bytearray(pkg.data)
    bad_crc[-6] ^= 0x01
    assert rules(check(bytes(bad_crc), reference)) == ["SEDA-ARCHIVE-CORROMPUE"]
    raw = gzip.decompress(pkg.data)
    assert check(raw, reference) == []  # a plain tar is read too
    findings = check(gzip.compress(raw + b"charge cachee" * 50), reference)
    assert rules(findings) == ["SEDA-DONNEES-CACHEES"]
