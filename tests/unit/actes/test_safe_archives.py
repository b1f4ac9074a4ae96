"""Hostile ZIP and tar.gz archives are refused, in memory, without writing anything anywhere."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile

import pytest

from flows.actes.intake import SubmissionError, read_submission
from flows.actes.messages import read_archive
from flows.actes.safearchive import MIB, UnsafeArchive, check_member_name, gunzip_capped, read_tar, read_zip
from flows.actes.transmission import make_tar_gz

from .conftest import DAY

PDF = b"%PDF-1.4\n%%EOF\n"


# ---------------------------------------------------------------- helpers


def make_tar(members, *, gz=True) -> bytes:
    """members: TarInfo-producing tuples (name, data, type, linkname)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    raw = buf.getvalue()
    return gzip.compress(raw) if gz else raw


def patch_tar_size(raw: bytes, new_size: int) -> bytes:
    """Rewrite the size field of the first header and its checksum."""
    header = bytearray(raw[:512])
    header[124:136] = f"{new_size:011o}\0".encode()
    header[148:156] = b"        "
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header) + raw[512:]


def make_zip(members, *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for item in members:
            if isinstance(item, zipfile.ZipInfo):
                zf.writestr(item, b"target")
            else:
                zf.writestr(*item)
    return buf.getvalue()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run in an empty directory and check afterwards that nothing was written there or above."""
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    inbox = tmp_path / "in"

    def tree():
        return sorted(p for p in tmp_path.rglob("*") if inbox not in p.parents and p != inbox)

    before = tree()
    yield work
    after = tree()
    assert after == before, "an archive reader wrote to disk"
    assert not (tmp_path / "evil.pdf").exists() and not os.path.exists("/tmp/evil-demat-actes")


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../evil.pdf", "a/../../evil.pdf", "/tmp/evil-demat-actes", "C:/evil.pdf",
                                  "..\\evil.pdf", "a\\..\\..\\evil", "", "a\x00b"])
def test_member_names_refused(name):
    with pytest.raises(UnsafeArchive):
        check_member_name(name)


def test_member_names_normalised():
    assert check_member_name("./dossier//acte.pdf") == "dossier/acte.pdf"


# ---------------------------------------------------------------- tar


@pytest.mark.parametrize("members,rule", [
    ([("../evil.pdf", PDF, tarfile.REGTYPE, "")], "ARCHIVE-CHEMIN-REMONTANT"),
    ([("/tmp/evil-demat-actes", PDF, tarfile.REGTYPE, "")], "ARCHIVE-CHEMIN-ABSOLU"),
    ([("lien.pdf", b"", tarfile.SYMTYPE, "/etc/passwd")], "ARCHIVE-LIEN"),
    ([("ok.pdf", PDF, tarfile.REGTYPE, ""), ("dur.pdf", b"", tarfile.LNKTYPE, "ok.pdf")], "ARCHIVE-LIEN"),
    ([("disque", b"", tarfile.CHRTYPE, "")], "ARCHIVE-TYPE"),
    ([("fifo", b"", tarfile.FIFOTYPE, "")], "ARCHIVE-TYPE"),
    ([("a.pdf", PDF, tarfile.REGTYPE, ""), ("a.pdf", PDF, tarfile.REGTYPE, "")], "ARCHIVE-DOUBLON"),
])
def test_hostile_tar_refused(members, rule, sandbox):
    data = make_tar(members)
    with pytest.raises(UnsafeArchive) as exc:
        read_archive(data)
    assert exc.value.rule == rule


def test_tar_declared_size_larger_than_data(sandbox):
    raw = make_tar([("a.pdf", PDF * 4, tarfile.REGTYPE, "")], gz=False)
    lying = patch_tar_size(raw, 100_000)[:2048]  # claims 100 kB, archive ends before
    with pytest.raises(UnsafeArchive) as exc:
        read_tar(gzip.compress(lying))
    assert exc.value.rule in ("ARCHIVE-TAILLE-FAUSSE", "ARCHIVE-ILLISIBLE")


def test_tar_declared_size_smaller_than_data(sandbox):
    raw = make_tar([("a.pdf", b"A" * 2000, tarfile.REGTYPE, ""), ("b.pdf", PDF, tarfile.REGTYPE, "")], gz=False)
    with pytest.raises(UnsafeArchive) as exc:
        read_tar(patch_tar_size(raw, 10))
    assert exc.value.rule == "ARCHIVE-TAILLE-FAUSSE"


def test_tar_member_over_cap(sandbox):
    data = make_tar([("gros.pdf", b"x" * 5000, tarfile.REGTYPE, "")])
    with pytest.raises(UnsafeArchive) as exc:
        read_tar(data, max_total_bytes=4000)
    assert exc.value.rule == "ARCHIVE-TAILLE"


def test_gzip_bomb_refused_while_decompressing(sandbox):
    bomb = gzip.compress(b"\0" * (8 * MIB), compresslevel=9)
    assert len(bomb) < 20_000
    with pytest.raises(UnsafeArchive) as exc:
        gunzip_capped(bomb, 1 * MIB)
    assert exc.value.rule == "ARCHIVE-BOMBE"
    tar_bomb = make_tar([("zeros.pdf", b"\0" * (8 * MIB), tarfile.REGTYPE, "")])
    with pytest.raises(UnsafeArchive) as exc:
        read_archive(tar_bomb, max_total_bytes=1 * MIB)
    assert exc.value.rule == "ARCHIVE-BOMBE"


def test_truncated_gzip_refused():
    data = make_tar_gz([("a.xml", b"<a/>")], DAY)
    with pytest.raises(UnsafeArchive):
        read_tar(data[: len(data) // 2])


def test_valid_tar_is_read():
    members = read_tar(make_tar_gz([("a.xml", b"<a/>"), ("b.pdf", PDF)], DAY))
    assert members == {"a.xml": b"<a/>", "b.pdf": PDF}


# ---------------------------------------------------------------- zip


def _zip_path(tmp_path, data):
    (tmp_path / "in").mkdir(exist_ok=True)
    p = tmp_path / "in" / "depot.zip"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("name,rule", [("../evil.pdf", "ARCHIVE-CHEMIN-REMONTANT"),
                                       ("/tmp/evil-demat-actes", "ARCHIVE-CHEMIN-ABSOLU"),
                                       ("dossier/../../evil.pdf", "ARCHIVE-CHEMIN-REMONTANT")])
def test_zip_paths_refused(name, rule, tmp_path, sandbox):
    data = make_zip([("acte.pdf", PDF), (zipfile.ZipInfo(name), b"")])
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data)
    assert exc.value.rule == rule
    with pytest.raises(SubmissionError) as exc2:
        read_submission(_zip_path(tmp_path, data))
    assert exc2.value.rule == rule


def test_zip_symlink_refused(sandbox):
    info = zipfile.ZipInfo("lien.pdf")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(make_zip([info]))
    assert exc.value.rule == "ARCHIVE-LIEN"


def test_zip_encrypted_member_refused(sandbox):
    b = bytearray(make_zip([("acte.pdf", PDF)]))  # zipfile cannot encrypt: set the "encrypted" flag bit
    b[b.find(b"PK\x03\x04") + 6] |= 0x1
    b[b.find(b"PK\x01\x02") + 8] |= 0x1
    data = bytes(b)
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data)
    assert exc.value.rule == "ARCHIVE-CHIFFREE"


def _patch_zip_sizes(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size in the local header and the central directory."""
    b = bytearray(data)
    local = b.find(b"PK\x03\x04")
    b[local + 22: local + 26] = size.to_bytes(4, "little")
    central = b.find(b"PK\x01\x02")
    b[central + 24: central + 28] = size.to_bytes(4, "little")
    return bytes(b)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("declared", [5, 1000])
def test_zip_lying_size_refused(compression, declared, sandbox):
    data = _patch_zip_sizes(make_zip([("acte.pdf", PDF * 3)], compression=compression), declared)
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data)
    assert exc.value.rule in ("ARCHIVE-TAILLE-FAUSSE", "ARCHIVE-CORROMPUE")


def test_zip_bomb_ratio_refused(sandbox):
    data = make_zip([("zeros.pdf", b"\0" * (4 * MIB))])
    assert len(data) < 50_000
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data)
    assert exc.value.rule == "ARCHIVE-BOMBE"


def test_zip_total_cap_refused(sandbox):
    data = make_zip([("a.pdf", os.urandom(3000)), ("b.pdf", os.urandom(3000))])
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data, max_total_bytes=5000)
    assert exc.value.rule == "ARCHIVE-TAILLE"


def test_zip_too_many_members(sandbox):
    data = make_zip([(f"f{i}.pdf", PDF) for i in range(12)])
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data, max_members=10)
    assert exc.value.rule == "ARCHIVE-TROP-DE-FICHIERS"


def test_zip_duplicate_names_refused(sandbox):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = make_zip([("acte.pdf", PDF), ("acte.pdf", PDF)])
    with pytest.raises(UnsafeArchive) as exc:
        read_zip(data)
    assert exc.value.rule == "ARCHIVE-DOUBLON"


def test_not_a_zip(tmp_path):
    with pytest.raises(SubmissionError) as exc:
        read_submission(_zip_path(tmp_path, b"PK but not really a zip"))
    assert exc.value.rule == "ARCHIVE-ILLISIBLE"


def test_system_files_and_dirs_ignored():
    data = make_zip([("dossier/", b""), ("__MACOSX/._acte.pdf", b"x"), (".DS_Store", b"x"), ("dossier/acte.pdf", PDF)])
    assert read_zip(data) == {"dossier/acte.pdf": PDF}


def test_gzip_multi_member_and_trailing_bytes():
    data = gzip.compress(b"abc") + gzip.compress(b"def") + b"\0\0garbage"
    assert gunzip_capped(data, 100) == b"abcdef"
    with pytest.raises(UnsafeArchive):
        gunzip_capped(gzip.compress(b"x" * 1000)[:-12], 10_000)  # truncated stream
    with pytest.raises(UnsafeArchive):
        gunzip_capped(b"\x1f\x8b\x08\x00garbage-not-deflate", 100)


def test_pax_long_name_with_dotdot_refused(sandbox):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a/" * 80 + "../" * 81 + "evil.pdf")  # > 100 chars: stored in a pax header
        info.size = len(PDF)
        tar.addfile(info, io.BytesIO(PDF))
    with pytest.raises(UnsafeArchive) as exc:
        read_tar(buf.getvalue())
    assert exc.value.rule == "ARCHIVE-CHEMIN-REMONTANT"


def test_tar_directories_skipped():
    data = make_tar([("dossier", b"", tarfile.DIRTYPE, ""), ("dossier/a.pdf", PDF, tarfile.REGTYPE, "")])
    assert read_tar(data) == {"dossier/a.pdf": PDF}
