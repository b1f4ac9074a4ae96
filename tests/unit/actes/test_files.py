"""validate_actes_file and inspect_actes_file (used by the CLI) on archives, messages and ZIPs."""

from __future__ import annotations

import pytest

from flows.actes import messages as M
from flows.actes.generate import generate_acte_zip
from flows.actes.inspect import inspect_actes_file
from flows.actes.transmission import build_transmission, make_tar_gz
from flows.actes.validate import validate_actes_file
from flows.findings import UnreadableFile

from .conftest import DAY
from .corpus import submission


def test_reference_archive_and_messages(samples):
    r = validate_actes_file(samples / "courrier_simple.tar.gz")
    assert r.ok and r.kind == "actes_archive"
    assert r.summary["messages"][0]["code"] == "2-1" and r.summary["siren"] == "862614864"
    for f in samples.glob("*.xml"):
        rep = validate_actes_file(f)
        assert rep.ok and rep.kind == "actes_message", f.name
    text = inspect_actes_file(samples / "courrier_simple.tar.gz")
    assert "Courrier simple" in text and "001-862614864-20150805-20150805B-AI-2-1_1.pdf" in text
    assert "REFUSÉ" in inspect_actes_file(samples / "044-214400152----1-3_1.xml")


def test_transmission_archive(tmp_path, collectivite):
    t = build_transmission(submission(), collectivite, serial=1, day=DAY)
    p = tmp_path / t.archive_name
    p.write_bytes(t.archive_bytes)
    r = validate_actes_file(p)
    assert r.ok and r.summary["messages"][0]["idacte"] == t.idacte
    assert t.idacte in inspect_actes_file(p)


def test_bad_files(tmp_path):
    broken = tmp_path / "x.tar.gz"
    broken.write_bytes(make_tar_gz([("../evil.xml", b"<a/>")], DAY))
    r = validate_actes_file(broken)
    assert not r.ok and r.findings[0].rule == "ARCHIVE-CHEMIN-REMONTANT"
    bad = tmp_path / "m.xml"
    bad.write_bytes(b"<a:ARAnnulation xmlns:a='http://www.interieur.gouv.fr/ACTES#v1.1-20040216' a:IDActe='x'/>")
    r = validate_actes_file(bad)
    assert not r.ok and {f.rule for f in r.findings} == {"XSD"}
    other = tmp_path / "o.xml"
    other.write_bytes(b"<PES_Aller/>")
    assert validate_actes_file(other).findings[0].rule == "ACTES-MESSAGE"
    missing = tmp_path / "absent.xml"
    with pytest.raises(UnreadableFile):
        validate_actes_file(missing)
    env_missing = tmp_path / "e.tar.gz"
    env_missing.write_bytes(make_tar_gz([("a.xml", M.build_courrier("2-1", "040-214002933-20250314-A-DE").xml)], DAY))
    assert {f.rule for f in validate_actes_file(env_missing).findings} == {"ACTES-ARCHIVE"}


def test_inspect_zip(tmp_path, collectivite):
    p = tmp_path / "a.zip"
    p.write_bytes(generate_acte_zip(collectivite=collectivite, numero="DEL9", n_annexes=1))
    text = inspect_actes_file(p)
    assert "DEL9" in text and "Délibérations" in text and "annexe_1.pdf" in text
    p.write_bytes(generate_acte_zip(numero="DEL9", defects=["zip_slip"]))
    assert "illisible" in inspect_actes_file(p)
