"""Counterpart simulators: the exactly-once processing loop, the three rule sets, and the whole
thing over real SFTP (asyncssh server, paramiko client with the pinned host key)."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree

from flows.actes.model import MESSAGE_CODES, NS_ACTES, NS_INSEE
from flows.actes.pdf import minimal_pdf
from flows.actes.transmission import make_tar_gz
from flows.actes.xmlutil import to_bytes
from flows.transport.errors import TransportUnavailable
from flows.transport.sftp import SftpEndpoint
from simulators import actes_wire as W
from simulators.counterparts import Counterpart, Decision, Reply, Settings
from simulators.dgfip import dgfip_rules
from simulators.prefecture import prefecture_rules
from simulators.run import Simulators
from simulators.sae import sae_rules
from tests.conftest import REFERENCE, ROOT

pytestmark = pytest.mark.integration

NS = NS_ACTES
PDF = minimal_pdf("Document de test")
SIREN = "214002933"
TODAY = date.today()


# -- messages built by hand (independent of the flows builders; only tar and bytes from flows.actes)


@pytest.fixture(autouse=True)
def official_reference(monkeypatch):
    """The counterparts judge by the official schemas here (CI has ../shared beside the checkout)."""
    if REFERENCE.is_dir() and "DEMAT_REFERENCE_DIR" not in os.environ:
        monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(REFERENCE))


def _el(parent, name, text=None, **attrs):
    el = etree.SubElement(parent, f"{{{NS}}}{name}") if parent is not None else etree.Element(
        f"{{{NS}}}{name}", nsmap={"actes": NS, "insee": NS_INSEE}
    )
    for k, v in attrs.items():
        el.set(f"{{{NS}}}{k}", v)
    if text is not None:
        el.text = text
    return el


def acte_archive(numero="DEL2026_01", *, decided=None, classification="2026-01-15", serial=1,
                 drop_document=False, kind="Acte", nature="DE",
                 objet="Délibération portant création d'un marché") -> tuple[str, bytes, str]:
    decided = decided or TODAY - timedelta(days=1)
    idacte = f"040-{SIREN}-{decided:%Y%m%d}-{numero}-{nature}"
    code = MESSAGE_CODES[kind]
    msg_name = f"{idacte}-{code}_0.xml"
    doc_name = f"99_DE-{idacte}-{code}_1.pdf"
    if kind == "Acte":
        root = _el(None, "Acte", Date=decided.isoformat(), NumeroInterne=numero, CodeNatureActe="1")
        _el(root, "CodeMatiere1", CodeMatiere="5")
        _el(root, "CodeMatiere2", CodeMatiere="2")
        _el(root, "Objet", objet)
        _el(root, "ClassificationDateVersion", classification)
        _el(_el(root, "Document"), "NomFichier", doc_name)
        _el(root, "Annexes", Nombre="0")
        _el(root, "DocumentPapier", "N")
    elif kind == "Annulation":
        root = _el(None, "Annulation", IDActe=idacte)
    else:  # answers to a courrier
        root = _el(None, kind, IDActe=idacte, DateCourrierPref=TODAY.isoformat())
        if kind != "ARDemandePieceComplementaire":
            docs = _el(root, "Documents") if kind == "PieceComplementaire" else root
            _el(_el(docs, "Document"), "NomFichier", doc_name)
    env = _el(None, "EnveloppeCLMISILL")
    idcl = _el(_el(env, "Emetteur"), "IDCL", Departement="040", Arrondissement="2", Nature="31")
    idcl.set(f"{{{NS_INSEE}}}SIREN", SIREN)
    _el(_el(env, "AdressesRetour"), "Email", "secretariat@saint-sever.fr")
    _el(_el(_el(env, "FormulairesEnvoyes"), "Formulaire"), "NomFichier", msg_name)
    env_name = f"EACT--{SIREN}--{TODAY:%Y%m%d}-{serial}.xml"
    members = [(env_name, to_bytes(env)), (msg_name, to_bytes(root))]
    if not drop_document:
        members.append((doc_name, PDF))
    return f"TDT-{env_name.removesuffix('.xml')}.tar.gz", make_tar_gz(members, TODAY), idacte


def reply_kinds(data: bytes) -> list[str]:
    """Root elements of the messages of a response archive, read with the independent reader."""
    members = dict(W.read_tar_gz(data))
    env = [n for n in members if n.startswith("EACT--SPREF")]
    assert len(env) == 1, members.keys()
    env_root = etree.fromstring(members[env[0]])
    assert etree.QName(env_root).localname == "EnveloppeMISILLCL"
    listed = [e.text for e in env_root.iter(f"{{{NS}}}NomFichier")]
    return [etree.QName(etree.fromstring(members[n])).localname for n in listed]


def reply_message(data: bytes) -> etree._Element:
    members = dict(W.read_tar_gz(data))
    env = etree.fromstring(members[next(n for n in members if n.startswith("EACT--SPREF"))])
    name = next(env.iter(f"{{{NS}}}NomFichier")).text
    return etree.fromstring(members[name])


def pes_file(nomfic="PES_TEST_1", idcoll="21400293300015") -> bytes:
    xml = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<n:PES_Aller xmlns:n="http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller">
<Enveloppe><Parametres><Version V="2"/><TypFic V="PESALR2"/><NomFic V="{nomfic}"/></Parametres></Enveloppe>
<EnTetePES><DteStr V="2026-11-25"/><IdPost V="040012"/><IdColl V="{idcoll}"/><CodCol V="293"/><CodBud V="01"/>
<LibelleColBud V="Budget principal"/></EnTetePES>
</n:PES_Aller>"""
    return xml.encode("iso-8859-1")


def seda_package(agreement="ACCORD-SAINT-SEVER", msgid="DEMAT-TEST-0001", *, drop_file=False) -> bytes:
    ns = "fr:gouv:culture:archivesdefrance:seda:v2.2"
    manifest = f"""<?xml version="1.0" encoding="UTF-8"?>
<ArchiveTransfer xmlns="{ns}"><Date>2026-11-25T10:00:00</Date><MessageIdentifier>{msgid}</MessageIdentifier>
<ArchivalAgreement>{agreement}</ArchivalAgreement><CodeListVersions/>
<DataObjectPackage><BinaryDataObject id="BDO1"><Uri>Content/acte.pdf</Uri></BinaryDataObject></DataObjectPackage>
<ArchivalAgency><Identifier>SAE-DEMO</Identifier></ArchivalAgency>
<TransferringAgency><Identifier>DEMAT</Identifier></TransferringAgency></ArchiveTransfer>""".encode()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        files = [("manifest.xml", manifest)] + ([] if drop_file else [("Content/acte.pdf", PDF)])
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- the processing loop, with a fake rules callable -----------------------------------------


class FakeRules:
    def __init__(self, fail_first: bool = False):
        self.calls: list[str] = []
        self.fail_first = fail_first

    def __call__(self, incoming):
        self.calls.append(incoming.name)
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("crash simulé avant l'enregistrement")
        return Decision([Reply(f"R_{incoming.name}", incoming.data[::-1])], "ok")


def test_each_file_is_processed_exactly_once_across_a_restart(tmp_path):
    rules = FakeRules()
    cp = Counterpart("fake", tmp_path / "fake", rules)
    (cp.depot / "A.xml").write_bytes(b"abc")
    (cp.depot / ".B.xml.part").write_bytes(b"in flight")
    (cp.depot / "C.xml.part").write_bytes(b"in flight")
    (cp.depot / ".D.xml.tmp").write_bytes(b"hidden")
    assert cp.poll_once() == {"processed": 1, "delivered": 1}
    assert cp.poll_once() == {"processed": 0, "delivered": 0}
    assert (cp.retour / "R_A.xml").read_bytes() == b"cba"
    cp.close()

    restarted = Counterpart("fake", tmp_path / "fake", rules)
    assert restarted.poll_once() == {"processed": 0, "delivered": 0}
    assert rules.calls == ["A.xml"]
    assert restarted.ledger.count("A.xml") == 1
    assert restarted.ledger.count("B.xml") == 0
    assert sorted(p.name for p in restarted.retour.iterdir()) == ["R_A.xml"]
    restarted.close()


def test_a_crash_before_commit_reprocesses_and_replies_wait_for_their_delay(tmp_path):
    rules = FakeRules(fail_first=True)
    cp = Counterpart("fake", tmp_path / "fake", rules, Settings(delay=60))
    (cp.depot / "A.xml").write_bytes(b"abc")
    assert cp.poll_once(now=1000)["processed"] == 0  # the rules crashed: nothing recorded
    assert cp.ledger.count("A.xml") == 0
    assert cp.poll_once(now=1000) == {"processed": 1, "delivered": 0}
    assert cp.ledger.count("A.xml") == 1
    assert cp.ledger.pending_replies()[0]["name"] == "R_A.xml"
    assert cp.poll_once(now=1059)["delivered"] == 0
    cp.close()
    restarted = Counterpart("fake", tmp_path / "fake", rules, Settings(delay=60))  # the outbox survives
    assert restarted.poll_once(now=1060) == {"processed": 0, "delivered": 1}
    assert restarted.poll_once(now=2000) == {"processed": 0, "delivered": 0}
    assert [p.name for p in restarted.retour.iterdir()] == ["R_A.xml"]
    assert restarted.ledger.delivered() == ["R_A.xml"]
    restarted.close()


def test_consume_mode_detects_a_second_transmission(tmp_path):
    seen = []

    def rules(incoming):
        seen.append(incoming.duplicate)
        return [Reply(f"R{len(seen)}_{incoming.name}", b"x")]

    cp = Counterpart("fake", tmp_path / "fake", rules, Settings(consume=True))
    (cp.depot / "A.xml").write_bytes(b"same")
    cp.poll_once()
    assert list(cp.depot.iterdir()) == [] and len(list(cp.recus.iterdir())) == 1
    (cp.depot / "A.xml").write_bytes(b"same")  # the platform sent it again
    cp.poll_once()
    assert cp.ledger.count("A.xml") == 2
    assert seen == [False, True]
    cp.close()


def test_silence_and_seeded_odds_are_reproducible(tmp_path):
    def decisions(root: Path, seed: int) -> list[str]:
        cp = Counterpart("fake", root, FakeRules(), Settings(silence_rate=0.5, seed=seed))
        for i in range(20):
            (cp.depot / f"F{i:02d}.xml").write_bytes(f"file {i}".encode())
        cp.poll_once()
        out = [r["outcome"] for r in cp.ledger.receptions()]
        cp.close()
        return out

    a, b = decisions(tmp_path / "a", 7), decisions(tmp_path / "b", 7)
    assert a == b
    assert 0 < sum("silence" in o for o in a) < 20
    assert decisions(tmp_path / "c", 8) != a


# -- préfecture rules ---------------------------------------------------------------------------


def run_rules(tmp_path, rules, name, data, **settings):
    cp = Counterpart("cp", tmp_path / f"cp{time.monotonic_ns()}", rules, Settings(**settings))
    (cp.depot / name).write_bytes(data)
    cp.poll_once()
    out = {p.name: p.read_bytes() for p in sorted(cp.retour.iterdir(), key=lambda p: p.name)}
    outcome = cp.ledger.receptions()[0]["outcome"]
    cp.close()
    return out, outcome


def official_actes_schema():
    xsd = REFERENCE / "actes" / "schemas" / "actesv1_1.xsd"
    if not xsd.exists():
        return None
    from flows.xmlsafe import schema_from_file

    return schema_from_file(xsd)


def assert_valid_actes(xml: etree._Element):
    schema = official_actes_schema()
    if schema is not None:
        assert schema.validate(xml), schema.error_log


def test_prefecture_acknowledges_a_valid_acte(tmp_path):
    name, data, idacte = acte_archive()
    out, outcome = run_rules(tmp_path, prefecture_rules, name, data, extra={"classification_date": "2026-01-15"})
    assert len(out) == 1, outcome
    (reply_name, reply), = out.items()
    assert reply_name.startswith(f"EACT--SPREF0402-{SIREN}-") and reply_name.endswith(".tar.gz")
    assert reply_kinds(reply) == ["ARActe"]
    msg = reply_message(reply)
    assert msg.get(f"{{{NS}}}IDActe") == idacte
    assert_valid_actes(msg)


@pytest.mark.parametrize(
    "kwargs, nature",
    [
        ({"decided": TODAY + timedelta(days=3)}, "001"),  # decision in the future
        ({"classification": "2020-01-01"}, "002"),  # classification not current
        ({"drop_document": True}, "004"),  # announced acte file missing
        ({"numero": "del_2026"}, "001"),  # lowercase NumeroInterne
    ],
)
def test_prefecture_reports_anomalies(tmp_path, kwargs, nature):
    name, data, _ = acte_archive(**kwargs)
    out, outcome = run_rules(tmp_path, prefecture_rules, name, data, extra={"classification_date": "2026-01-15"})
    (reply,) = out.values()
    msg = reply_message(reply)
    assert etree.QName(msg).localname == "AnomalieActe", outcome
    assert msg.findtext(f"{{{NS}}}Nature") == nature
    assert msg.findtext(f"{{{NS}}}Detail")
    assert_valid_actes(msg)


def test_prefecture_refuses_broken_archives_with_anomalie_enveloppe(tmp_path):
    out, outcome = run_rules(tmp_path, prefecture_rules, f"TDT-EACT--{SIREN}--20261125-9.tar.gz", b"not a tar")
    (reply,) = out.values()
    assert reply_kinds(reply) == ["AnomalieEnveloppe"]
    assert "004" in outcome
    evil = make_tar_gz([("../../etc/passwd", b"x")], TODAY)
    out, outcome = run_rules(tmp_path, prefecture_rules, f"TDT-EACT--{SIREN}--20261125-9.tar.gz", evil)
    assert reply_kinds(next(iter(out.values()))) == ["AnomalieEnveloppe"]


def test_prefecture_refuses_the_same_acte_twice(tmp_path):
    cp = Counterpart("pref", tmp_path / "pref", prefecture_rules)
    name, data, _ = acte_archive(serial=1)
    (cp.depot / name).write_bytes(data)
    cp.poll_once()
    name2, data2, _ = acte_archive(serial=2)  # same IDActe, new envelope
    (cp.depot / name2).write_bytes(data2)
    cp.poll_once()
    kinds = sorted(reply_kinds(p.read_bytes())[0] for p in cp.retour.iterdir())
    assert kinds == ["ARActe", "AnomalieActe"]
    assert "003" in cp.ledger.receptions()[1]["outcome"]
    cp.close()


def test_prefecture_sends_later_mail_and_answers_the_other_messages(tmp_path):
    name, data, idacte = acte_archive()
    cp = Counterpart("pref", tmp_path / "pref", prefecture_rules, Settings(later_rate=1.0, later_delay=30))
    (cp.depot / name).write_bytes(data)
    cp.poll_once(now=time.time())
    assert [reply_kinds(p.read_bytes()) for p in cp.retour.iterdir()] == [["ARActe"]]
    cp.poll_once(now=time.time() + 31)
    kinds = sorted(reply_kinds(p.read_bytes())[0] for p in cp.retour.iterdir())
    assert kinds[0] == "ARActe" and kinds[1] in ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations")
    later = next(p for p in cp.retour.iterdir() if reply_kinds(p.read_bytes())[0] != "ARActe")
    members = dict(W.read_tar_gz(later.read_bytes()))
    assert any(n.endswith(".pdf") and v.startswith(b"%PDF") for n, v in members.items())
    assert_valid_actes(reply_message(later.read_bytes()))
    cp.close()



def _answer(cp: Counterpart, name: str, data: bytes) -> tuple[list[bytes], str]:
    before = {p.name for p in cp.retour.iterdir()}
    (cp.depot / name).write_bytes(data)
    cp.poll_once(now=time.time() + 3600)
    outcome = cp.ledger.receptions()[-1]["outcome"]
    return [p.read_bytes() for p in cp.retour.iterdir() if p.name not in before], outcome


def test_prefecture_answers_only_what_it_sent_letters_for_and_annuls_only_a_received_acte(tmp_path):
    """State: answers to a letter the préfecture never sent, and the annulation of an acte it never received
    (or already annulled), are refused with an AnomalieEnveloppe naming the reason."""
    cp = Counterpart("pref", tmp_path / "pref", prefecture_rules, Settings(extra={"forced_delay": 0}))
    try:
        for kind in ("PieceComplementaire", "ReponseLettreObservations", "Annulation"):  # before anything was sent
            name, data, idacte = acte_archive(kind=kind)
            (reply,), outcome = _answer(cp, name, data)
            assert reply_kinds(reply) == ["AnomalieEnveloppe"], outcome
            assert "jamais" in outcome or "aucun courrier" in outcome
            assert_valid_actes(reply_message(reply))
        name, data, idacte = acte_archive(serial=3, objet="Délibération [simulateur:3-1,4-1]")
        replies, outcome = _answer(cp, name, data)
        assert sorted(reply_kinds(r)[0] for r in replies) == ["ARActe", "DemandePieceComplementaire",
                                                              "LettreObservations"], outcome
        for kind, expected in [
            ("PieceComplementaire", ["ARPieceComplementaire"]),
            ("RefusPieceComplementaire", ["ARPieceComplementaire"]),
            ("ReponseLettreObservations", ["ARReponseRejetLettreObservations"]),
            ("RejetLettreObservations", ["ARReponseRejetLettreObservations"]),
            ("ARDemandePieceComplementaire", None),
            ("ReponseCourrierSimple", ["AnomalieEnveloppe"]),  # no courrier simple was sent
            ("Annulation", ["ARAnnulation"]),
            ("Annulation", ["AnomalieEnveloppe"]),  # already annulled
        ]:
            name, data, _ = acte_archive(kind=kind, serial=10 + len(cp.ledger.receptions()))
            replies, outcome = _answer(cp, name, data)
            if expected is None:
                assert replies == [], outcome
                continue
            (reply,) = replies
            assert reply_kinds(reply) == expected, (kind, outcome)
            msg = reply_message(reply)
            assert_valid_actes(msg)
            if expected != ["AnomalieEnveloppe"]:
                assert idacte in etree.tostring(msg).decode("iso-8859-1")
    finally:
        cp.close()


def test_prefecture_answers_a_classification_request(tmp_path):
    env = _el(None, "EnveloppeCLMISILL")
    idcl = _el(_el(env, "Emetteur"), "IDCL", Departement="040", Arrondissement="2", Nature="31")
    idcl.set(f"{{{NS_INSEE}}}SIREN", SIREN)
    _el(_el(env, "AdressesRetour"), "Email", "a@b.fr")
    msg_name = f"040-{SIREN}----7-1_0.xml"
    _el(_el(_el(env, "FormulairesEnvoyes"), "Formulaire"), "NomFichier", msg_name)
    data = make_tar_gz([(f"EACT--{SIREN}--20261125-3.xml", to_bytes(env)),
                        (msg_name, to_bytes(_el(None, "DemandeClassification")))], TODAY)
    out, outcome = run_rules(tmp_path, prefecture_rules, f"TDT-EACT--{SIREN}--20261125-3.tar.gz", data,
                             extra={"classification_date": "2026-01-15"})
    (reply,) = out.values()
    assert reply_kinds(reply) == ["RetourClassification"]
    msg = reply_message(reply)
    assert msg.findtext(f"{{{NS}}}DateClassification") == "2026-01-15"
    assert_valid_actes(msg)


# -- DGFiP and SAE rules ----------------------------------------------------------------------


def test_dgfip_answers_acquit_named_after_the_file(tmp_path):
    out, outcome = run_rules(tmp_path, dgfip_rules, "PESALR2_TEST.xml", b"<not-xml")
    assert list(out) == ["ACQUIT_PESALR2_TEST.xml"]
    root = etree.fromstring(out["ACQUIT_PESALR2_TEST.xml"])
    assert etree.QName(root).localname == "PES_ACQUIT"
    assert {e.get("V") for e in root.iter("EtatAck")} == {"0"}
    assert "refusé" in outcome


def _generated_pes_through_dgfip(tmp_path, *, defects=()):
    gen = pytest.importorskip("flows.helios.generate")
    acquit_mod = pytest.importorskip("flows.helios.acquit")
    pes = gen.generate_pes(siret="21400293300015", idpost="040012", codcol="293", codbud="01", nomfic="PES_OK_1",
                           defects=defects)
    out, outcome = run_rules(tmp_path, dgfip_rules, "PES_OK_1.xml", pes)
    return acquit_mod.parse_acquit(out["ACQUIT_PES_OK_1.xml"]), outcome


def test_dgfip_accepts_a_generated_pes(tmp_path):
    acquit, outcome = _generated_pes_through_dgfip(tmp_path)
    assert acquit.accepted, outcome
    assert acquit.nomfic == "PES_OK_1"


def test_dgfip_refuses_a_pes_whose_tiers_break_its_rules(tmp_path):
    """The DGFiP applies its own tiers rules (simulators.helios_rules), not demat's quality gate."""
    acquit, outcome = _generated_pes_through_dgfip(tmp_path, defects=("bad_iban",))
    assert not acquit.accepted, outcome
    assert "refusé" in outcome
    assert "IBAN" in acquit.summary_fr, acquit.summary_fr


def test_dgfip_refuses_a_second_file_with_the_same_nomfic(tmp_path):
    try:
        from flows.helios.generate import generate_pes

        pes = generate_pes(siret="21400293300015", idpost="040012", codcol="293", codbud="01", nomfic="PES_DOUBLON")
    except ImportError:
        pes = pes_file("PES_DOUBLON")
    cp = Counterpart("dgfip", tmp_path / "dgfip", dgfip_rules, Settings())
    (cp.depot / "A.xml").write_bytes(pes)
    cp.poll_once()
    (cp.depot / "B.xml").write_bytes(pes)
    cp.poll_once()
    states = {}
    for name in ("ACQUIT_A.xml", "ACQUIT_B.xml"):
        root = etree.fromstring((cp.retour / name).read_bytes())
        states[name] = {e.get("V") for e in root.iter("EtatAck")}
    outcomes = [r["outcome"] for r in cp.ledger.receptions()]
    cp.close()
    assert states["ACQUIT_A.xml"] == {"1"}, outcomes
    assert "0" in states["ACQUIT_B.xml"], outcomes


def real_package(agreement: str):
    seda = pytest.importorskip("flows.archive.seda")
    from flows.config.models import ArchiveProfile

    request = seda.ArchiveRequest(
        dossier_id="D-2026-1", title="Délibération E2E", flow="actes", doc_type="deliberation",
        collectivite_name="Commune de Saint-Sever", collectivite_siren=SIREN,
        profile=ArchiveProfile(archival_agreement=agreement), start_date=date(2026, 1, 1), end_date=date(2026, 1, 2),
        files=[seda.ArchiveFile("acte.pdf", PDF)],
    )
    return seda.build_package(request)


def test_sae_acknowledges_then_accepts_or_refuses(tmp_path):
    from flows.archive.replies import parse_reply

    settings = {"extra": {"known_agreements": ["ACCORD-SAINT-SEVER"]}, "later_delay": 0}
    pkg = real_package("ACCORD-SAINT-SEVER")
    out, outcome = run_rules(tmp_path, sae_rules, pkg.name, pkg.data, **settings)
    token = pkg.message_identifier
    assert sorted(out) == [f"ACK_{token}.xml", f"ATR_{token}.xml"], outcome
    ack = parse_reply(out[f"ACK_{token}.xml"])
    atr = parse_reply(out[f"ATR_{token}.xml"])
    assert ack.kind.lower() == "acknowledgement"
    assert atr.accepted and atr.reply_code == "000" and atr.archive_id, outcome

    pkg = real_package("INCONNU")
    out, outcome = run_rules(tmp_path, sae_rules, pkg.name, pkg.data, **settings)
    atr = parse_reply(out[f"ATR_{pkg.message_identifier}.xml"])
    assert not atr.accepted and atr.reply_code.startswith("3"), outcome

    out, outcome = run_rules(tmp_path, sae_rules, "garbage.tar.gz", b"garbage", **settings)
    atr = parse_reply(out["ATR_garbage.xml"])
    assert not atr.accepted
    assert atr.reason_fr


def test_sae_minimal_package_is_refused_with_a_reason(tmp_path):
    from flows.archive.replies import parse_reply

    out, outcome = run_rules(tmp_path, sae_rules, "p.tar.gz", seda_package(drop_file=True), later_delay=0,
                             extra={"known_agreements": ["ACCORD-SAINT-SEVER"]})
    atr = parse_reply(out["ATR_DEMAT-TEST-0001.xml"])
    assert not atr.accepted and atr.reply_code != "000", outcome


# -- everything over real SFTP ------------------------------------------------------------------


@pytest.fixture
def sims(tmp_path):
    fast = Settings(delay=0, later_delay=0, poll_interval=0.05,
                    extra={"known_agreements": ["ACCORD-SAINT-SEVER"]})
    s = Simulators(tmp_path / "state", settings={n: fast for n in ("prefecture", "dgfip", "sae")})
    s.start()
    yield s
    s.stop()


def connect(ep: dict, timeout: float = 5) -> SftpEndpoint:
    return SftpEndpoint(ep["host"], ep["port"], ep["username"], ep["key_path"], ep["host_key"], timeout=timeout)


def wait_for(ep: SftpEndpoint, directory: str, count: int, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = ep.listdir(directory)
        if len(names) >= count:
            return names
        time.sleep(0.05)
    raise AssertionError(f"{directory}: {count} réponse(s) attendue(s), {ep.listdir(directory)} reçue(s)")


def test_endpoints_json_lets_a_client_connect_with_the_pinned_key(sims):
    data = json.loads((sims.base / "endpoints.json").read_text())
    assert set(data) == {"prefecture", "dgfip", "sae"}
    for ep in data.values():
        assert ep["host_key"].startswith("ssh-ed25519 ") and "PRIVATE" not in json.dumps(ep)
        assert ep["upload_dir"] == "/depot" and ep["reply_dir"] == "/retour"
        assert oct(os.stat(ep["key_path"]).st_mode & 0o777) == "0o600"
        with connect(ep) as c:
            assert c.listdir(ep["reply_dir"]) == []
    assert len({ep["host_key"] for ep in data.values()}) == 3  # one host key per gateway


def test_end_to_end_over_sftp_exactly_once_across_a_restart(tmp_path):
    fast = Settings(delay=0, later_delay=0, poll_interval=0.05,
                    extra={"known_agreements": ["ACCORD-SAINT-SEVER"]})
    settings = {n: fast for n in ("prefecture", "dgfip", "sae")}
    name, data, idacte = acte_archive()
    with Simulators(tmp_path / "state", settings=settings) as sims:
        eps = sims.endpoints()
        with connect(eps["prefecture"]) as pref, connect(eps["dgfip"]) as dgfip, connect(eps["sae"]) as sae:
            assert pref.upload_atomic("/depot", name, data) is True
            assert dgfip.upload_atomic("/depot", "PES_E2E.xml", pes_file()) is True
            assert sae.upload_atomic("/depot", "paquet.tar.gz", seda_package()) is True
            (reply,) = wait_for(pref, "/retour", 1)
            assert reply_kinds(pref.read(f"/retour/{reply}")) == ["ARActe"]
            assert wait_for(dgfip, "/retour", 1) == ["ACQUIT_PES_E2E.xml"]
            assert wait_for(sae, "/retour", 2) == ["ACK_DEMAT-TEST-0001.xml", "ATR_DEMAT-TEST-0001.xml"]
    # restart: same state, same keys; the platform retries its upload after a crash
    with Simulators(tmp_path / "state", settings=settings) as sims:
        eps2 = sims.endpoints()
        assert eps2["prefecture"]["host_key"] == eps["prefecture"]["host_key"]
        with connect(eps2["prefecture"]) as pref:
            assert pref.upload_atomic("/depot", name, data) is False  # already there: not sent twice
            time.sleep(0.3)
            assert len(pref.listdir("/retour")) == 1
        assert sims.counterparts["prefecture"].ledger.count(name) == 1
        assert sims.counterparts["dgfip"].ledger.count("PES_E2E.xml") == 1


def test_down_switch_stops_one_counterpart_only(sims):
    eps = sims.endpoints()
    (sims.counterparts["dgfip"].root / "DOWN").touch()
    with pytest.raises(TransportUnavailable):
        with connect(eps["dgfip"], timeout=2):
            pass
    with connect(eps["prefecture"]) as pref:
        assert pref.listdir("/depot") == []
    (sims.counterparts["dgfip"].root / "DOWN").unlink()
    with connect(eps["dgfip"]) as dgfip:
        assert dgfip.upload_atomic("/depot", "PES_AFTER.xml", pes_file("PES_AFTER")) is True


def test_end_to_end_with_the_platform_modules(tmp_path, sims):
    """An acte built by flows.actes goes through the préfecture; its AR parses with flows.actes."""
    transmission = pytest.importorskip("flows.actes.transmission")
    generate = pytest.importorskip("flows.actes.generate")
    intake = pytest.importorskip("flows.actes.intake")
    messages = pytest.importorskip("flows.actes.messages")
    from flows.config import load_config

    config = load_config(ROOT / "flows" / "config" / "demo.yaml")
    coll = config.collectivite("saint-sever")
    zip_path = tmp_path / "acte.zip"
    zip_path.write_bytes(generate.generate_acte_zip(collectivite=coll, numero="E2E1"))
    sub = intake.read_submission(zip_path)
    t = transmission.build_transmission(sub, coll, serial=7)
    ep = sims.endpoints()["prefecture"]
    with connect(ep) as pref:
        assert pref.upload_atomic(ep["upload_dir"], t.archive_name, t.archive_bytes) is True
        (reply,) = wait_for(pref, ep["reply_dir"], 1)
        archive = messages.read_archive(pref.read(f"{ep['reply_dir']}/{reply}"), reply)
    assert not archive.problems, archive.problems
    (msg,) = archive.messages.values()
    assert msg.kind in ("ARActe", "AnomalieActe")
    assert msg.idacte == t.idacte
    if msg.kind == "AnomalieActe":  # the classification date is the only acceptable reason here
        assert msg.nature == "002", msg.summary_fr


def test_command_line_starts_writes_endpoints_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--state", str(state), "--config", str(ROOT / "flows/config/demo.yaml"),
         "--delay", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        path = state / "simulators" / "endpoints.json"
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert path.exists(), proc.stdout.read().decode() if proc.poll() is not None else "pas de endpoints.json"
        eps = json.loads(path.read_text())
        with connect(eps["sae"]) as sae:
            sae.upload_atomic("/depot", "p.tar.gz", seda_package())
            assert "ACK_DEMAT-TEST-0001.xml" in wait_for(sae, "/retour", 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "simulateurs arrêtés" in text
    # it says which schemas each counterpart judges with, and which authorities it trusts (none here)
    assert "DGFiP (PES_Aller) : schéma" in text and "SAE (SEDA 2.2)" in text, text
    assert "magasin de confiance VIDE" in text, text
    assert "PRIVATE KEY" not in text and "BEGIN OPENSSH" not in text
