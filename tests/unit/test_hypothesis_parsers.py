"""Property-based tests: random bytes and mutated valid documents never make a parser fail with an
unexpected exception type. Allowed: a Report or findings, UnreadableFile, UnsafeXML, and the
documented ValueError subclasses of each reader (MessageError, UnsafeArchive, SubmissionError).

Bounded for CI: few examples per parser, derandomized (the same examples at every run, so a
failure is reproducible), no example database written into the repository.
"""

from __future__ import annotations

import functools
import tempfile
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from flows.actes.intake import SubmissionError
from flows.actes.messages import MessageError
from flows.actes.safearchive import UnsafeArchive
from flows.findings import Finding, Report, UnreadableFile
from flows.xmlsafe import UnsafeXML

ALLOWED = (UnreadableFile, UnsafeXML, MessageError, UnsafeArchive, SubmissionError)
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def seeds() -> dict[str, bytes]:
    from flows.actes.generate import generate_acte_zip
    from flows.actes.messages import build_aracte, build_response_archive
    from flows.archive.replies import build_acknowledgement, build_transfer_reply
    from flows.config import load_config
    from flows.helios.acquit import build_acquit
    from flows.helios.generate import generate_pes
    from flows.settings import REPO

    coll = load_config(REPO / "flows" / "config" / "demo.yaml").collectivite("saint-sever")
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic="PESHYPO01", seed=1)
    idacte = f"040-{coll.siren}-20260102-HYPO2026_01-DE"
    ar = build_aracte(idacte, date(2026, 1, 3), date(2024, 1, 15))
    _name, archive = build_response_archive([ar], 1, coll.siren, "040", arrondissement=2, day=date(2026, 1, 3))
    return {
        "pes": pes,
        "acquit": build_acquit(pes, [Finding("ERREUR_AUTRE", "refus")]),
        "sae_ack": build_acknowledgement("DEMAT-MSG-1"),
        "sae_reply": build_transfer_reply("DEMAT-MSG-1", "000", archive_id="ARCH-1"),
        "aracte": ar.data if hasattr(ar, "data") else ar.xml,
        "actes_archive": archive,
        "acte_zip": generate_acte_zip(collectivite=coll, numero="HYPO2026_01"),
    }


@st.composite
def mutated(draw, seed: str):
    """A valid document with a few byte flips, insertions, deletions or a truncation."""
    data = bytearray(seeds()[seed])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i:i + draw(st.integers(1, 200))]
    return bytes(data)


def inputs(seed: str):
    return st.one_of(st.binary(max_size=2048), mutated(seed))


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ALLOWED as exc:
        assert str(exc).strip(), f"{type(exc).__name__} sans message"
        return exc


_TMP = tempfile.TemporaryDirectory(prefix="demat-hypo-")  # removed at interpreter exit


def _as_file(data: bytes, suffix: str) -> Path:
    path = Path(_TMP.name) / f"doc{suffix}"  # one file, rewritten at each example
    path.write_bytes(data)
    return path


def test_seeds_are_valid():
    from flows.actes.messages import parse_message, read_archive
    from flows.archive.replies import parse_reply
    from flows.helios.acquit import parse_acquit

    s = seeds()
    assert parse_acquit(s["acquit"]).nomfic == "PESHYPO01"
    assert parse_reply(s["sae_reply"]).final
    assert parse_message(s["aracte"]).kind == "ARActe"
    assert [m.kind for m in read_archive(s["actes_archive"]).messages] == ["ARActe"]


@FAST
@given(inputs("acquit"))
def test_parse_acquit(data):
    from flows.helios.acquit import parse_acquit

    _call(parse_acquit, data)


@FAST
@given(st.one_of(inputs("sae_reply"), mutated("sae_ack")))
def test_parse_reply(data):
    from flows.archive.replies import parse_reply

    _call(parse_reply, data)
    _call(parse_reply, data, our_message_identifier="DEMAT-MSG-1")


@FAST
@given(inputs("aracte"))
def test_parse_message(data):
    from flows.actes.messages import parse_message

    _call(parse_message, data)


@FAST
@given(inputs("actes_archive"))
def test_read_archive(data):
    from flows.actes.messages import read_archive

    _call(read_archive, data)


@FAST
@given(inputs("actes_archive"))
def test_check_package(data):
    from flows.archive.check import check_package

    out = check_package(data, known_agreements={"ACCORD-SAINT-SEVER"})
    assert isinstance(out, list) and out, "un paquet aléatoire ne peut pas être accepté"
    assert all(isinstance(f, Finding) for f in out)


@FAST
@given(inputs("acte_zip"))
def test_read_submission_and_validate_acte_zip(data):
    from flows.actes.intake import read_submission
    from flows.actes.validate import validate_acte_zip

    _call(read_submission, data)
    report = _call(validate_acte_zip, _as_file(data, ".zip"))
    assert isinstance(report, Report | Exception)


@FAST
@given(inputs("pes"))
def test_validate_pes(data):
    from flows.helios.validate import validate_pes

    report = _call(validate_pes, _as_file(data, ".xml"))
    if isinstance(report, Report) and data != seeds()["pes"]:
        report.to_text()
        report.to_json()


@FAST
@given(st.one_of(inputs("pes"), mutated("acquit")))
def test_xmlsafe_parse_bytes(data):
    from flows import xmlsafe

    try:
        xmlsafe.parse_bytes(data)
    except (UnsafeXML, etree.XMLSyntaxError):
        pass
