"""The préfecture's answers and the agent's replies, on a real PostgreSQL and a local "SFTP" folder.

Messages come from flows.actes builders (what the préfecture simulator sends) and from the real
reference archive courrier_simple.tar.gz.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select

from flows.actes import messages as M
from flows.actes.classification import (
    build_reponse_sans_changement,
    build_retour_classification,
    national_default,
)
from flows.actes.messages import read_archive
from flows.actes.pdf import encrypt_pdf, minimal_pdf
from flows.actes.transmission import build_envelope_xml
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.dossier.store import ArtefactStore
from flows.pipeline import answers
from flows.pipeline import classification as C
from flows.pipeline.prefecture import handle_prefecture_reply
from flows.settings import REPO, Settings
from flows.transport.local import LocalEndpoint

COLL = "saint-sever"
SIREN = "214002933"
IDACTE = "040-214002933-20261120-DEL42-DE"
DCOURRIER = date(2026, 11, 24)
PDF = minimal_pdf("Réponse de la commune", "Pièces demandées")


@pytest.fixture
def settings(tmp_path, demat_db) -> Settings:
    state = tmp_path / "state"
    return Settings(
        state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
        store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki", reference_dir=tmp_path,
    )


@pytest.fixture
def prefecture(tmp_path):
    root = tmp_path / "prefecture"
    (root / "depot").mkdir(parents=True)
    return root


def endpoints(root: Path):
    return lambda counterpart: LocalEndpoint(root)


def make_dossier(settings: Settings, idacte: str = IDACTE, state: str = "transmis", sha: str = "a") -> str:
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=COLL, flow="actes", original_name="acte.zip", sha256=sha * 64, size=10,
                           doc_type="deliberation")
        d.objet = "Délibération sur les tarifs"
        for target in ("valide", "signe", "transmis", "acquitte", "depose_sae", "archive"):
            if d.state == state:
                break
            service.transition(s, d, target, message=f"test → {target}")
        d.idacte = idacte
        d.transmitted_at = service.now()
        return d.id


def receive(settings: Settings, *msgs, serial: int = 1, name: str | None = None) -> list[str]:
    arch_name, data = M.build_response_archive(list(msgs), serial, SIREN, "040", arrondissement=2)
    return receive_bytes(settings, name or arch_name, data)


def receive_bytes(settings: Settings, name: str, data: bytes) -> list[str]:
    with session_scope(settings.database_url) as s:
        return handle_prefecture_reply(s, ArtefactStore(settings.store_root), name, data,
                                       inbox_root=settings.inbox_root)


def dossier(settings: Settings, dossier_id: str):
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        return d, list(d.journal), list(d.artefacts)


def drop_reply(settings: Settings, files: dict[str, bytes], idacte: str = IDACTE, age: float = 10) -> Path:
    folder = answers.reply_folder(settings.inbox_root, COLL, idacte)
    folder.mkdir(parents=True, exist_ok=True)
    old = time.time() - age
    for name, data in files.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (old, old))
    return folder


def sent(prefecture: Path) -> list[str]:
    return sorted(p.name for p in (prefecture / "depot").iterdir() if not p.name.startswith("."))


def message_of(prefecture: Path, name: str):
    archive = read_archive((prefecture / "depot" / name).read_bytes(), name)
    assert not archive.problems, archive.problems
    assert len(archive.messages) == 1
    return archive, archive.messages[0]


# --------------------------------------------------------------------------------------------- AR and anomalies
def test_aracte_acknowledges_with_date_of_reception(settings):
    did = make_dossier(settings)
    touched = receive(settings, M.build_aracte(IDACTE, date(2026, 11, 21), date(2024, 1, 15)))
    assert touched == [did]
    d, journal, arts = dossier(settings, did)
    assert d.state == "acquitte" and d.acknowledged_at is not None
    last = journal[-1]
    assert last.event == "ARActe" and last.state_to == "acquitte" and last.actor == "préfecture"
    assert "21/11/2026" in last.message and last.details["date_reception"] == "2026-11-21"
    assert "prefecture_ARActe" in {a.kind for a in arts}
    # the same AR again (another archive): journalled, no second transition
    receive(settings, M.build_aracte(IDACTE, date(2026, 11, 21), date(2024, 1, 15)), serial=2)
    d, journal, _ = dossier(settings, did)
    assert d.state == "acquitte" and [e.state_to for e in journal].count("acquitte") == 1


def test_anomalie_acte_refuses_with_nature_and_detail(settings):
    did = make_dossier(settings)
    receive(settings, M.build_anomalie_acte(IDACTE, "002", "Classification périmée", date=date(2026, 11, 21),
                                            classification_date=date(2026, 1, 1)))
    d, journal, _ = dossier(settings, did)
    assert d.state == "refuse_etat"
    assert "002" in d.reason and "classification" in d.reason and "Classification périmée" in d.reason
    assert journal[-1].details["nature"] == "002" and journal[-1].details["detail"] == "Classification périmée"


def test_anomalie_enveloppe_with_a_code_outside_the_schema_list_is_read(settings):
    from flows.actes.naming import message_name

    did = make_dossier(settings)
    coll = settings.config.collectivite(COLL)
    env = build_envelope_xml(coll, [message_name(IDACTE, "1-1")], ["actes@demat-tdt.fr"])
    ano = M.build_anomalie_enveloppe(env, "042", "Code inconnu du schéma", envelope_name="EACT--214002933--20261120-3.xml")
    receive(settings, ano)
    d, journal, _ = dossier(settings, did)
    assert d.state == "refuse_etat", [e.message for e in journal]
    assert "042" in d.reason and "Code inconnu du schéma" in d.reason
    assert journal[-1].event == "AnomalieEnveloppe"


def test_unknown_acte_and_unreadable_archive(settings):
    make_dossier(settings)
    assert receive(settings, M.build_aracte("040-214002933-20261120-AUTRE-DE", date(2026, 11, 21),
                                            date(2024, 1, 15))) == []
    with pytest.raises(Exception):  # noqa: B017 - collect records it as "illisible"
        receive_bytes(settings, "x.tar.gz", b"not a tar at all")
    from flows.actes.transmission import make_tar_gz

    hostile = make_tar_gz([("../../evil.xml", b"<x/>")], date(2026, 1, 1))
    with pytest.raises(Exception):  # noqa: B017
        receive_bytes(settings, "evil.tar.gz", hostile)
    assert not (settings.inbox_root.parent / "evil.xml").exists()


# --------------------------------------------------------------------------------------------- letters and answers
def test_demande_de_pieces_alert_answer_sent_and_acknowledged(settings, prefecture, reference):
    did = make_dossier(settings, state="archive")
    courrier = M.build_courrier("3-1", IDACTE, date=DCOURRIER, description="Le plan de financement signé")
    receive(settings, courrier)
    d, journal, arts = dossier(settings, did)
    assert d.state == "archive"  # a letter never changes the state
    events = [e.event for e in journal]
    assert "DemandePieceComplementaire" in events and "alerte" in events
    assert "Le plan de financement signé" in journal[-2].message
    assert "courrier_3-1" in {a.kind for a in arts}
    alert = answers.courriers_dir(settings.inbox_root, COLL) / f"ALERTE-{did}.txt"
    text = alert.read_text()
    assert "demande de pièces complémentaires" in text and IDACTE in text and "3-4" in text
    assert (alert.parent / f"{IDACTE}-3-1_1.pdf").read_bytes().startswith(b"%PDF")
    folder = answers.reply_folder(settings.inbox_root, COLL, IDACTE)
    assert folder.is_dir() and not any(folder.iterdir())

    # nothing dropped yet: nothing sent; a file still being written: not taken
    assert answers.process_replies(settings, endpoints(prefecture)).sent == []
    drop_reply(settings, {"plan-financement.pdf": PDF}, age=0)
    assert answers.process_replies(settings, endpoints(prefecture)).sent == []
    os.utime(folder / "plan-financement.pdf", (time.time() - 10, time.time() - 10))
    result = answers.process_replies(settings, endpoints(prefecture))
    assert len(result.sent) == 1 and sent(prefecture) == result.sent
    name = result.sent[0]
    assert name.startswith("TDT-EACT--214002933--") and name.endswith(".tar.gz")
    archive, msg = message_of(prefecture, name)
    assert msg.kind == "PieceComplementaire" and msg.idacte == IDACTE and msg.date_courrier_pref == DCOURRIER
    assert msg.schema_errors == [] and archive.envelope.schema_errors == []
    assert list(archive.documents.values()) == [PDF]
    official = etree.XMLSchema(etree.parse(str(reference / "actes" / "schemas" / "actesv1_1.xsd")))
    assert official.validate(etree.fromstring(msg.data)), official.error_log
    # folder moved to traites, never deleted
    assert not folder.exists()
    done = list((folder.parent / answers.DONE_DIR).iterdir())
    assert len(done) == 1 and (done[0] / "plan-financement.pdf").read_bytes() == PDF
    d, journal, arts = dossier(settings, did)
    assert journal[-1].event == "envoi_3-4" and name in journal[-1].message
    assert "envoi_3-4" in {a.kind for a in arts}
    # a second batch sends nothing more
    assert answers.process_replies(settings, endpoints(prefecture)).sent == []
    assert sent(prefecture) == [name]

    # the préfecture acknowledges (3-5)
    receive(settings, M.build_ar_for("PieceComplementaire", IDACTE, DCOURRIER, date_reception=date(2026, 11, 26)),
            serial=2)
    d, journal, _ = dossier(settings, did)
    assert journal[-1].event == "ARPieceComplementaire" and name in journal[-1].message
    with session_scope(settings.database_url) as s:
        envoi = s.execute(select(answers.ActesEnvoi)).scalar_one()
        c = s.execute(select(answers.PrefectureCourrier)).scalar_one()
        assert envoi.status == "acquitte" and envoi.acknowledged_at is not None
        assert c.status == "repondu"
        assert verify_chain(s).ok


def test_json_chooses_the_answer_and_ar_keeps_the_letter_waiting(settings, prefecture):
    did = make_dossier(settings, state="acquitte")
    receive(settings, M.build_courrier("DemandePieceComplementaire", IDACTE, date=DCOURRIER))
    drop_reply(settings, {"reponse.json": json.dumps({"reponse": "3-2", "agent": "Mme Durand"}).encode()})
    result = answers.process_replies(settings, endpoints(prefecture))
    _, msg = message_of(prefecture, result.sent[0])
    assert msg.kind == "ARDemandePieceComplementaire"
    d, journal, _ = dossier(settings, did)
    assert journal[-1].actor == "Mme Durand" and journal[-1].event == "envoi_3-2"
    # the letter still waits for the pieces: the reply folder is open again
    assert answers.reply_folder(settings.inbox_root, COLL, IDACTE).is_dir()
    drop_reply(settings, {"refus.pdf": PDF, "reponse.json": json.dumps(
        {"reponse": "3-3", "motif": "Pièces inexistantes"}).encode()})
    result = answers.process_replies(settings, endpoints(prefecture))
    _, msg = message_of(prefecture, result.sent[0])
    assert msg.kind == "RefusPieceComplementaire"
    d, journal, _ = dossier(settings, did)
    assert "Pièces inexistantes" in journal[-1].message
    assert not answers.reply_folder(settings.inbox_root, COLL, IDACTE).exists()
    assert len(sent(prefecture)) == 2


@pytest.mark.parametrize("files, why", [
    ({"lettre.docx": b"PK\x03\x04 word"}, "PDF attendu"),
    ({"chiffre.pdf": encrypt_pdf(PDF)}, "chiffré"),
    ({"faux.pdf": b"GIF89a not a pdf"}, "n'est pas un PDF"),
    ({"reponse.json": b"{not json"}, "JSON"),
    ({"reponse.json": json.dumps({"reponse": "9-9"}).encode()}, "inconnue"),
    ({"a.pdf": PDF, "reponse.json": json.dumps({"reponse": "4-4"}).encode()}, "lettre d'observations"),
    ({"a.pdf": PDF, "reponse.json": json.dumps({"reponse": "3-2"}).encode()}, "ne porte pas de document"),
])
def test_bad_answers_are_refused_beside_the_files(settings, prefecture, files, why):
    did = make_dossier(settings, state="acquitte")
    receive(settings, M.build_courrier("3-1", IDACTE, date=DCOURRIER))
    folder = drop_reply(settings, files)
    result = answers.process_replies(settings, endpoints(prefecture))
    assert result.sent == [] and result.refused == [IDACTE] and sent(prefecture) == []
    error = (folder / answers.ERROR_FILE).read_text()
    assert why in error and "PAS transmis" in error
    assert set(files) <= {p.name for p in folder.iterdir()}  # the agent's files are kept
    _, journal, _ = dossier(settings, did)
    assert journal[-1].event == "reponse_refusee"
    # not retried until something changes
    assert answers.process_replies(settings, endpoints(prefecture)).refused == []


def test_answer_without_any_letter_is_refused(settings, prefecture):
    make_dossier(settings, state="acquitte")
    folder = drop_reply(settings, {"a.pdf": PDF})
    assert answers.process_replies(settings, endpoints(prefecture)).refused == [IDACTE]
    assert "aucun courrier" in (folder / answers.ERROR_FILE).read_text()


def test_lost_alert_and_reply_folder_are_written_again(settings, prefecture):
    import shutil

    did = make_dossier(settings, state="acquitte")
    receive(settings, M.build_courrier("3-1", IDACTE, date=DCOURRIER))
    alert = answers.courriers_dir(settings.inbox_root, COLL) / f"ALERTE-{did}.txt"
    shutil.rmtree(answers.actes_dir(settings.inbox_root, COLL))
    answers.process_replies(settings, endpoints(prefecture))
    assert alert.exists() and "en attente de réponse" in alert.read_text()
    assert answers.reply_folder(settings.inbox_root, COLL, IDACTE).is_dir()


def test_crash_after_recording_resends_the_same_bytes_once(settings, prefecture):
    make_dossier(settings, state="acquitte")
    receive(settings, M.build_courrier("2-1", IDACTE, date=DCOURRIER))
    folder = drop_reply(settings, {"reponse.pdf": PDF})
    claimed = answers._claim(folder)
    envoi_id = answers._prepare_answer(settings, claimed, COLL, IDACTE)  # then the worker dies
    assert sent(prefecture) == []
    result = answers.process_replies(settings, endpoints(prefecture))
    assert result.resumed and result.sent == result.resumed
    with session_scope(settings.database_url) as s:
        envoi = s.get(answers.ActesEnvoi, envoi_id)
        assert envoi.status == "transmis" and sent(prefecture) == [envoi.name]
    _, msg = message_of(prefecture, sent(prefecture)[0])
    assert msg.kind == "ReponseCourrierSimple"
    assert not any((folder.parent / answers.CLAIMED_DIR).iterdir())


def test_lettre_observations_default_answer_and_defere_alert(settings, prefecture):
    did = make_dossier(settings, state="acquitte")
    receive(settings, M.build_courrier("4-1", IDACTE, date=DCOURRIER, motif="Incompétence de l'auteur"))
    drop_reply(settings, {"reponse-prefet.pdf": PDF})
    result = answers.process_replies(settings, endpoints(prefecture))
    _, msg = message_of(prefecture, result.sent[0])
    assert msg.kind == "ReponseLettreObservations"
    receive(settings, M.build_courrier("5-1", IDACTE, date=date(2026, 12, 1), nature_illegalite="Vice de forme"),
            serial=3)
    _, journal, _ = dossier(settings, did)
    assert journal[-2].event == "DefereTA" and "tribunal administratif" in journal[-2].message
    assert journal[-1].event == "alerte" and "juridique" in journal[-1].message
    alert = (answers.courriers_dir(settings.inbox_root, COLL) / f"ALERTE-{did}.txt").read_text()
    assert alert.index("déféré") < alert.index("lettre d'observations")  # newest first, both kept
    assert not answers.reply_folder(settings.inbox_root, COLL, IDACTE).exists()


def test_reference_courrier_simple_archive(settings, samples_dir):
    idacte = "001-862614864-20150805-20150805B-AI"
    did = make_dossier(settings, idacte=idacte, state="acquitte")
    data = (samples_dir / "courrier_simple.tar.gz").read_bytes()
    assert receive_bytes(settings, "courrier_simple.tar.gz", data) == [did]
    d, journal, arts = dossier(settings, did)
    note = next(e for e in journal if e.event == "CourrierSimple")
    assert "05/08/2015" in note.message and "courrier simple" in note.message
    pdf = next(a for a in arts if a.kind == "courrier_2-1")
    assert pdf.name == "001-862614864-20150805-20150805B-AI-2-1_1.pdf" and pdf.size == 21803
    with session_scope(settings.database_url) as s:
        c = s.execute(select(answers.PrefectureCourrier)).scalar_one()
        assert c.kind == "CourrierSimple" and c.date_courrier == date(2015, 8, 5) and c.status == "attente_reponse"
    assert answers.reply_folder(settings.inbox_root, COLL, idacte).is_dir()


# --------------------------------------------------------------------------------------------- annulation
def test_annulation_sent_once_and_acknowledged(settings, prefecture):
    did = make_dossier(settings, state="archive")
    name = answers.request_annulation(settings, did, "Mme Durand", "Erreur de destinataire",
                                      endpoint_factory=endpoints(prefecture))
    assert sent(prefecture) == [name]
    _, msg = message_of(prefecture, name)
    assert msg.kind == "Annulation" and msg.idacte == IDACTE and msg.schema_errors == []
    assert answers.request_annulation(settings, did, "Mme Durand", "encore", endpoint_factory=endpoints(prefecture)) == name
    assert sent(prefecture) == [name]
    _, journal, _ = dossier(settings, did)
    assert [e.event for e in journal][-2:] == ["annulation_demandee", "envoi_6-1"]
    receive(settings, M.build_ar_annulation(IDACTE, date(2026, 11, 26)))
    d, journal, _ = dossier(settings, did)
    assert d.state == "annule" and journal[-1].event == "ARAnnulation" and "26/11/2026" in journal[-1].message


def test_annulation_refused_for_an_acte_not_transmitted(settings, prefecture):
    did = make_dossier(settings, state="valide")
    with pytest.raises(ValueError, match="acte transmis"):
        answers.request_annulation(settings, did, "x", "motif", endpoint_factory=endpoints(prefecture))
    assert sent(prefecture) == []


# --------------------------------------------------------------------------------------------- classification
def test_classification_requested_stored_and_current(settings, prefecture):
    out = C.request_classification(settings, COLL, endpoints(prefecture))
    assert out.sent and sent(prefecture) == [out.name]
    archive, msg = message_of(prefecture, out.name)
    assert msg.kind == "DemandeClassification" and msg.schema_errors == []
    again = C.request_classification(settings, COLL, endpoints(prefecture))
    assert not again.sent and sent(prefecture) == [out.name]  # once a day
    with session_scope(settings.database_url) as s:
        assert C.current_classification(s, SIREN) is None
    xml = build_retour_classification(national_default(date(2026, 3, 1)))
    assert receive(settings, ("040-214002933----7-2_0.xml", xml)) == []
    receive(settings, ("040-214002933----7-2_0.xml", xml), serial=2)  # twice: stored once
    with session_scope(settings.database_url) as s:
        cur = C.current_classification(s, SIREN)
        assert cur is not None and cur.date == date(2026, 3, 1) and cur.has_matiere("5.2")
        assert len(s.execute(select(C.ClassificationRecord)).scalars().all()) == 1
        req = s.execute(select(C.ClassificationRequest)).scalar_one()
        assert req.status == "repondu"
        assert C.current_classification(s, "200030617") is None
    receive(settings, ("040-214002933----7-3_0.xml", build_reponse_sans_changement(date(2026, 3, 1))), serial=3)
    with session_scope(settings.database_url) as s:
        assert C.current_classification(s, SIREN).date == date(2026, 3, 1)
        assert not C.current_classification(s, SIREN).national_default


def test_reference_retour_classification_is_stored(settings, samples_dir):
    data = (samples_dir / "RetourClassification_example.xml").read_bytes()
    receive(settings, ("040-214002933----7-2_0.xml", data))
    with session_scope(settings.database_url) as s:
        cur = C.current_classification(s, SIREN)
        ref = C.parse_retour_classification(data)
        assert cur is not None and cur.date == ref.date and cur.matieres == ref.matieres and len(cur.matieres) > 50


@pytest.fixture
def samples_dir(reference) -> Path:
    return reference / "actes" / "samples"


# --------------------------------------------------------------------------------------------- simulator scenario hook
@pytest.mark.parametrize("objet, expected", [
    ("Délibération [simulateur:3-1]", ["ARActe", "DemandePieceComplementaire"]),
    ("Délibération [simulateur:2-1, 4-1]", ["ARActe", "CourrierSimple", "LettreObservations"]),
    ("Délibération ordinaire", ["ARActe"]),
])
def test_simulator_sends_the_letter_asked_by_the_scenario_marker(tmp_path, objet, expected):
    import hashlib
    import random

    from flows.actes.generate import generate_acte_zip
    from flows.actes.intake import read_submission
    from flows.actes.transmission import build_transmission
    from flows.config import load_config
    from simulators.counterparts import Incoming
    from simulators.counterparts import Settings as SimSettings
    from simulators.prefecture import prefecture_rules

    coll = load_config(REPO / "flows" / "config" / "demo.yaml").collectivite(COLL)
    z = tmp_path / "a.zip"
    z.write_bytes(generate_acte_zip(collectivite=coll, numero="SIM1", objet=objet))
    tx = build_transmission(read_submission(z), coll, serial=1)
    incoming = Incoming(name=tx.archive_name, data=tx.archive_bytes, sha256=hashlib.sha256(tx.archive_bytes).hexdigest(),
                        rng=random.Random(0), settings=SimSettings(), reception_id=1, received_at=time.time())  # noqa: S311
    decision = prefecture_rules(incoming)
    kinds = [r.note for r in decision.replies]
    assert kinds == expected, decision.outcome
    assert all(r.delay == 5.0 for r in decision.replies[1:])


def test_files_no_message_cites_are_said_in_the_dossier(settings):
    """A préfecture archive with a logo beside its ARActe: applied, and the journal says what was extra."""
    did = make_dossier(settings)
    aracte = M.build_aracte(IDACTE, date(2026, 11, 21), date(2024, 1, 15))
    aracte.documents["logo_prefecture.png"] = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    assert receive(settings, aracte) == [did]
    d, journal, _ = dossier(settings, did)
    assert d.state == "acquitte"
    notes = [e for e in journal if e.event == "archive_prefecture_remarque"]
    assert len(notes) == 1 and "logo_prefecture.png" in notes[0].message
