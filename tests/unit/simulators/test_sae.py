"""The SAE simulator checks packages with its own code (simulators.sae_checks), never demat's
flows.archive.check: schema, files and digests, unreferenced files, agreement, formats, hostile entries."""

from __future__ import annotations

import io
import tarfile
from datetime import date

import pytest

from simulators import reference as simref
from simulators.sae_checks import check_package, reply_code

SIREN = "214002933"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def package(agreement="ACCORD-SAINT-SEVER", files=None):
    from flows.archive.seda import ArchiveFile, ArchiveRequest, build_package
    from flows.config.models import ArchiveProfile

    request = ArchiveRequest(
        dossier_id="D-2026-1", title="Délibération", flow="actes", doc_type="deliberation",
        collectivite_name="Commune de Saint-Sever", collectivite_siren=SIREN,
        profile=ArchiveProfile(archival_agreement=agreement), start_date=date(2026, 1, 1), end_date=date(2026, 1, 2),
        files=files or [ArchiveFile("acte.pdf", PDF)],
    )
    return build_package(request)


def members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def repack(items: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in items:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


KNOWN = {"ACCORD-SAINT-SEVER"}


def codes(data: bytes) -> tuple[str, list[str]]:
    found = check_package(data, known_agreements=KNOWN)
    return reply_code(found), [f.message for f in found]


def test_a_package_built_by_demat_is_accepted():
    code, why = codes(package().data)
    assert code == "000", why


def test_unknown_agreement_is_300():
    code, why = codes(package("ACCORD-INCONNU").data)
    assert code == "300" and "ACCORD-INCONNU" in why[0]


@pytest.mark.parametrize("change", ["alter", "drop", "extra", "not_pdf"])
def test_files_must_match_the_manifest(change):
    items = members(package().data)
    content = next(i for i, (n, _) in enumerate(items) if n != "manifest.xml")
    name, data = items[content]
    if change == "alter":
        items[content] = (name, data.replace(b"obj", b"OBJ"))
    elif change == "drop":
        del items[content]
    elif change == "extra":
        items.append(("Content/intrus.pdf", PDF))
    code, why = codes(repack(items))
    if change == "not_pdf":  # same digest and size, declared PDF, but not one
        from flows.archive.seda import ArchiveFile

        code, why = codes(package(files=[ArchiveFile("acte.pdf", b"GIF89a pas un PDF")]).data)
    assert code == "200", why
    words = {"alter": "empreinte", "drop": "absent", "extra": "décrit nulle part", "not_pdf": "%PDF-"}[change]
    assert any(words in w for w in why), why


def test_manifest_against_the_schema_and_hostile_entries_are_101():
    items = members(package().data)
    items = [(n, c.replace(b"<MessageIdentifier>", b"<MessageIdentifiant>").replace(
        b"</MessageIdentifier>", b"</MessageIdentifiant>")) if n == "manifest.xml" else (n, c) for n, c in items]
    code, why = codes(repack(items))
    assert code == "101" and "schéma SEDA" in why[0], why
    assert codes(repack([("../manifest.xml", b"<x/>")]))[0] == "101"
    assert codes(b"garbage")[0] == "101"
    assert codes(repack([("Content/a.pdf", PDF)]))[0] == "101"  # no manifest


def test_without_any_seda_schema_the_sae_cannot_judge(monkeypatch, tmp_path):
    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(simref, "PROJECT_SCHEMAS", tmp_path / "schemas")
    code, why = codes(package().data)
    assert code == "FATAL" and "SEDA" in why[0], why


def test_with_the_project_schema_alone_the_sae_judges_the_same(monkeypatch, tmp_path):
    """A user's clone has no reference set: the project's SEDA schema stands in, and judges alike."""
    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(tmp_path / "absent"))
    assert not simref.locate("seda").official
    assert codes(package().data)[0] == "000"
    items = [(n, c.replace(b"<MessageIdentifier>", b"<MessageIdentifiant>").replace(
        b"</MessageIdentifier>", b"</MessageIdentifiant>")) if n == "manifest.xml" else (n, c)
        for n, c in members(package().data)]
    assert codes(repack(items))[0] == "101"
