"""SAE replies: the real samples (identifiers swapped), the simulator builders, hostile input."""

from __future__ import annotations

import pytest

from flows.archive.replies import (
    build_acknowledgement,
    build_transfer_reply,
    explain_code,
    matches,
    parse_reply,
)
from flows.archive.schemas import validate_manifest
from flows.findings import UnreadableFile

OUR_ID = "15ef78ef665a8777c33d1125783707f8dfb190f82869dc9248e46c5ed396d70b_1542893421"


def _sample(reference, name: str) -> bytes:
    return (reference / "seda" / "samples" / name).read_bytes()


def test_real_acknowledgement(reference):
    ack = parse_reply(_sample(reference, "Acknowledgement_2.1.xml"), our_message_identifier=OUR_ID)
    assert ack.kind == "acknowledgement" and ack.version == "2.1"
    assert ack.message_identifier == "FRAD000_ACK_14"
    assert ack.message_received_identifier == OUR_ID
    assert ack.sender == "LS_PA" and ack.receiver == "FRAD000"
    assert not ack.accepted and not ack.final and ack.archive_id is None
    assert ack.swapped is False
    assert matches(ack, OUR_ID)
    assert not matches(ack, "DEMAT-autre-dossier")
    assert "Accusé de réception" in ack.reason_fr and "Versement flux test pastell dev" in ack.reason_fr


def test_real_transfer_reply_with_swapped_identifiers(reference):
    data = _sample(reference, "ArchiveTransferReply_2.1_accepted.xml")
    reply = parse_reply(data, our_message_identifier=OUR_ID)
    assert reply.kind == "transfer_reply" and reply.final
    assert reply.reply_code == "000" and reply.accepted
    # the sample puts OUR identifier in MessageIdentifier and its own in MessageRequestIdentifier
    assert reply.message_identifier == OUR_ID
    assert reply.message_request_identifier == "FRLSADC_ATR_27"
    assert reply.swapped is True
    assert matches(reply, OUR_ID)
    assert not matches(reply, "DEMAT-autre-dossier") and not matches(reply, "")
    assert reply.archive_id == "AE_2022_15"  # the archive's own cote for the top unit
    assert reply.archival_agency == "FRLSADC" and reply.grant_date == "2022-05-02T14:48:34+02:00"
    assert reply.reason_fr.startswith("Transfert accepté")
    # without our identifier the same facts, swap unknown
    assert parse_reply(data).swapped is None and parse_reply(data).archive_id == "AE_2022_15"


def test_real_ack_and_reply_match_the_same_transfer(reference):
    ack = parse_reply(_sample(reference, "Acknowledgement_2.1.xml"))
    atr = parse_reply(_sample(reference, "ArchiveTransferReply_2.1_accepted.xml"))
    assert matches(ack, ack.message_received_identifier) and matches(atr, ack.message_received_identifier)


@pytest.mark.parametrize("version", ["2.1", "2.2", "2.3"])
def test_builders_valid_and_round_trip(reference, version):
    ack = build_acknowledgement("DEMAT-D1-abc123", version, sender="AD040", receiver="DEMAT", comment="reçu")
    assert validate_manifest(ack, version, reference_dir=reference) == []
    parsed = parse_reply(ack)
    assert parsed.version == version and parsed.message_received_identifier == "DEMAT-D1-abc123"
    assert matches(parsed, "DEMAT-D1-abc123")

    ok = build_transfer_reply("DEMAT-D1-abc123", "000", "AD040-2024-0001", "Versement accepté", version,
                              archival_agency="AD040")
    assert validate_manifest(ok, version, reference_dir=reference) == []
    r = parse_reply(ok, our_message_identifier="DEMAT-D1-abc123")
    assert r.accepted and r.archive_id == "AD040-2024-0001" and r.swapped is False and r.grant_date
    assert r.archival_agency == "AD040"

    refused = build_transfer_reply(
        "DEMAT-D1-abc123", "200", None, "Paquet refusé", version,
        events=[{"EventType": "Contrôle des empreintes", "EventDetail": "empreinte différente pour BDO_002",
                 "Outcome": "KO", "OutcomeDetail": "SEDA-EMPREINTE"}],
    )
    assert validate_manifest(refused, version, reference_dir=reference) == []
    r = parse_reply(refused)
    assert not r.accepted and r.archive_id is None and r.grant_date is None
    assert r.events[0]["Outcome"] == "KO"
    assert "fichiers du paquet" in r.reason_fr and "empreinte différente pour BDO_002" in r.reason_fr
    assert "Paquet refusé" in r.reason_fr


@pytest.mark.parametrize(
    "code,accepted",
    [("000", True), ("OK", True), ("ok", True), ("WARNING", False), ("KO", False), ("FATAL", False),
     ("001", False), ("101", False), ("300", False), ("ZZZ", False)],
)
def test_only_000_or_ok_accepted(code, accepted):
    r = parse_reply(build_transfer_reply("DEMAT-X", code, "A-1" if accepted else None, None, "2.2"))
    assert r.accepted is accepted
    assert r.reason_fr  # always an explanation in French
    if code == "WARNING":
        assert "pas considéré comme accepté" in r.reason_fr


def test_swapped_simulator_reply_and_archive_id_fallback(reference):
    data = build_transfer_reply("DEMAT-D9-xyz", "OK", None, None, "2.2", message_identifier="SAE-ATR-77",
                                swap_identifiers=True)
    assert validate_manifest(data, reference_dir=reference) == []
    r = parse_reply(data, our_message_identifier="DEMAT-D9-xyz")
    assert r.message_identifier == "DEMAT-D9-xyz" and r.message_request_identifier == "SAE-ATR-77"
    assert r.swapped is True and matches(r, "DEMAT-D9-xyz")
    assert r.archive_id == "SAE-ATR-77"  # no archive unit: the archive's own message identifier
    straight = parse_reply(build_transfer_reply("DEMAT-D9-xyz", "OK", None, None, "2.2", message_identifier="SAE-ATR-78"))
    assert straight.archive_id == "SAE-ATR-78" and matches(straight, "DEMAT-D9-xyz")


def test_explain_code():
    assert "accepté" in explain_code("000")
    assert "schéma" in explain_code("101")
    assert "accord de versement" in explain_code("300")
    assert "inconnu" in explain_code("XYZ")
    assert "absent" in explain_code(None)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"not xml at all", "illisible"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><Acknowledgement>&e;</Acknowledgement>', "DOCTYPE"),
        (b'<Acknowledgement xmlns="fr:gouv:culture:archivesdefrance:seda:v1.0"/>', "espace de noms"),
        (b"<Acknowledgement/>", "espace de noms"),
        (b'<ArchiveTransfer xmlns="fr:gouv:culture:archivesdefrance:seda:v2.2"/>', "inattendu"),
    ],
)
def test_hostile_or_foreign_replies(data, message):
    with pytest.raises(UnreadableFile, match=message):
        parse_reply(data)
