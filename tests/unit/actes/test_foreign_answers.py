"""Issue 15: answers of the ministère written as S²low/FAST-style gateways pass them on.

- an AnomalieEnveloppe whose nature is outside the official schema's list is accepted, with a
  warning naming the unknown code;
- a préfecture archive carrying files no message cites (a logo, an HTML body) is kept and read,
  with a warning, not refused;
- what is really wrong in an archive (a message announced but absent) is still refused.
"""

from __future__ import annotations

import pytest

from flows.actes import messages as M
from flows.actes.messages import parse_message, read_archive
from flows.actes.validate import validate_acte_zip, validate_actes_file
from flows.cli import main

from .conftest import DAY
from .corpus import IDACTE, all_messages

SIREN, DEPT = "214002933", "040"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
HTML = "<!DOCTYPE html><html><body><p>Madame le Maire, veuillez trouver ci-joint…</p></body></html>".encode()


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ AnomalieEnveloppe


@pytest.mark.parametrize("nature", ["007", "042", "999"])
def test_unknown_anomalie_enveloppe_nature_is_accepted_with_a_warning(tmp_path, nature):
    envelope = all_messages()["EnveloppeCLMISILL"]  # the collectivité's envelope, echoed back
    msg = M.build_anomalie_enveloppe(envelope, nature, "Archive refusée par la plateforme", date=DAY)
    parsed = parse_message(msg.xml, msg.name)
    assert parsed.kind == "AnomalieEnveloppe" and parsed.nature == nature
    warnings = parsed.extra.get("avertissements", [])
    assert warnings and nature in warnings[0] and "001" in warnings[0]

    name, data = M.build_response_archive([msg], 3, SIREN, DEPT, arrondissement=2, day=DAY)
    report = validate_actes_file(_write(tmp_path, name, data))
    assert report.ok, report.to_text()  # accepted: the State's answer is never lost ...
    w = [f for f in report.warnings if f.rule == "ACTES-NATURE-INCONNUE"]
    assert w and w[0].value == nature and nature in w[0].message  # ... but said
    assert w[0].message.startswith(msg.name)


@pytest.mark.parametrize("nature", ["001", "002", "003", "004", "005", "100"])
def test_listed_natures_carry_no_warning(nature):
    msg = M.build_anomalie_enveloppe(None, nature, "x", date=DAY)
    assert not parse_message(msg.xml, msg.name).extra.get("avertissements")


# ------------------------------------------------------------------ files no message cites


def _courrier_archive(extra: dict[str, bytes]) -> tuple[str, bytes]:
    courrier = M.build_courrier("2-1", IDACTE, date=DAY, description="Observations sur la délibération")
    courrier.documents.update(extra)
    return M.build_response_archive([courrier], 7, SIREN, DEPT, arrondissement=2, day=DAY)


def test_uncited_logo_and_html_body_are_kept_read_and_warned(tmp_path, capsys):
    name, data = _courrier_archive({"logo_prefecture.png": PNG, "corps_du_mail.html": HTML})
    archive = read_archive(data, name)
    assert archive.problems == []  # before issue 15: "n'est cité par aucun message" -> refused
    assert {"logo_prefecture.png", "corps_du_mail.html"} <= set(archive.documents)  # kept
    assert [m.kind for m in archive.messages] == ["CourrierSimple"]  # the courrier is still read
    notes = " ".join(archive.notes)
    assert "image PNG" in notes and "page HTML" in notes  # read: the note says what they are

    path = _write(tmp_path, name, data)
    report = validate_actes_file(path)
    assert report.ok, report.to_text()
    w = [f for f in report.warnings if f.rule == "ACTES-ARCHIVE-FICHIER-NON-CITE"]
    assert len(w) == 2 and all(f.message.startswith(name) for f in w)
    assert {"logo_prefecture.png", "corps_du_mail.html"} <= set(report.summary["documents"])
    assert main(["validate", str(path)]) == 0
    assert "AVERTISSEMENT" in capsys.readouterr().out


def test_message_announced_but_absent_is_still_refused(tmp_path):
    courrier = M.build_courrier("2-1", IDACTE, date=DAY)
    env = M.build_envelope_misillcl(SIREN, DEPT, 2, [courrier.name, "absent-2-1_9.xml"])
    from flows.actes.transmission import make_tar_gz

    data = make_tar_gz([("EACT--SPREF0402-214002933-20250320-8.xml", env), (courrier.name, courrier.xml),
                        *courrier.documents.items()], DAY)
    report = validate_actes_file(_write(tmp_path, "EACT--SPREF0402-214002933-20250320-8.tar.gz", data))
    assert not report.ok and any("absent-2-1_9.xml" in f.message for f in report.errors)


def test_hostile_archive_member_still_refused(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../etc/evil.html")
        info.size = len(HTML)
        tar.addfile(info, io.BytesIO(HTML))
    report = validate_actes_file(_write(tmp_path, "EACT--evil.tar.gz", buf.getvalue()))
    assert not report.ok and any(f.layer == "lecture" for f in report.errors)


# ------------------------------------------------------------------ French first (tarfile, zlib, errno)


def _french_first(message: str) -> bool:
    head = message.split("(")[0]
    english = ("Error", "invalid header", "not a zip", "No such file", "unexpected end", "Compressed file",
               "could not be opened", "Bad ", "Truncated")
    return not any(w in head for w in english)


def test_archive_errors_are_french_first(tmp_path):
    courrier = M.build_courrier("2-1", IDACTE, date=DAY)
    name, data = M.build_response_archive([courrier], 9, SIREN, DEPT, arrondissement=2, day=DAY)
    import gzip

    cases = {
        "tronquee.tar.gz": data[: len(data) // 2],
        "zlib.tar.gz": b"\x1f\x8b" + b"x" * 100,
        "pas_un_tar.tar.gz": gzip.compress(b"y" * 1024),
    }
    for label, blob in cases.items():
        report = validate_actes_file(_write(tmp_path, label, blob))
        assert not report.ok
        for f in report.errors:
            assert _french_first(f.message), f.message
    zf = validate_acte_zip_messages(tmp_path / "faux.zip", b"PK\x03\x04pas un zip")
    assert zf and all(_french_first(m) for m in zf) and "ce n'est pas une archive ZIP" in zf[0]
    missing = [f.message for f in validate_acte_zip(tmp_path / "absent.zip").findings]
    assert missing and "introuvable" in missing[0] and _french_first(missing[0])


def validate_acte_zip_messages(path, data: bytes) -> list[str]:
    path.write_bytes(data)
    return [f.message for f in validate_acte_zip(path).findings]


def test_error_fr_wraps_every_kind():
    import errno
    import tarfile
    import zipfile
    import zlib

    from lxml import etree

    from flows.helios.xsdtext import error_fr

    samples = [OSError(errno.ENOENT, "No such file or directory"), OSError(errno.EACCES, "Permission denied"),
               zipfile.BadZipFile("File is not a zip file"), zlib.error("Error -3 while decompressing data"),
               EOFError("Compressed file ended before the end-of-stream marker was reached"),
               tarfile.ReadError("invalid header")]
    try:
        etree.fromstring(b"<a><b></a>")
    except etree.XMLSyntaxError as exc:
        samples.append(exc)
    for exc in samples:
        text = error_fr(exc)
        assert _french_first(text) and "(" in text, text
