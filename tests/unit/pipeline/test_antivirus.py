"""Antivirus on every entering file, with a real clamd (own socket, own signature database)."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flows import antivirus
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.models import Artefact, Dossier, JournalEntry
from flows.dossier.store import ArtefactStore
from flows.pipeline import actions, answers, inbox
from flows.pipeline.ingest import refuse_if_infected, sweep, waiting_note
from flows.settings import REPO, Settings
from tests.clamav import CUSTOM_MARKER, EICAR, Clamd, available

pytestmark = pytest.mark.skipif(not available(), reason="clamd absent : apt-get install clamav-daemon")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    daemon = Clamd(tmp_path_factory.mktemp("clamd")).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def settings(tmp_path, demat_db) -> Settings:
    state = tmp_path / "state"
    s = Settings(state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
                 store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
                 reference_dir=tmp_path)
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    return s


@pytest.fixture
def scanning(clamd, monkeypatch):
    monkeypatch.setenv("DEMAT_CLAMD_SOCKET", str(clamd.socket))
    return clamd


def _drop(settings: Settings, name: str, data: bytes, coll="saint-sever", flow="helios") -> Path:
    p = settings.inbox_root / coll / flow / name
    p.write_bytes(data)
    old = time.time() - 10
    os.utime(p, (old, old))
    return p


def _zip_with(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", b"{}")
        z.writestr(member, data)
    return buf.getvalue()


def _count(url, model) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(model))


# --------------------------------------------------------------------------------------------- the client
def test_verdicts_of_a_real_clamd(clamd):
    scanner = antivirus.Scanner(str(clamd.socket))
    assert scanner.scan_bytes(b"<PES_Aller/>").status == antivirus.CLEAN
    assert scanner.scan_bytes(EICAR).infected
    found = scanner.scan_bytes(b"%PDF-1.4 " + CUSTOM_MARKER + b" %%EOF")
    assert found.infected and "Demat.Test.Marqueur" in found.signature
    inside = scanner.scan_bytes(_zip_with("annexe.pdf", b"%PDF-1.4\n" + EICAR))  # compressed in an acte ZIP
    assert inside.infected and "EICAR" in inside.signature
    big = scanner.scan_bytes(os.urandom(3 * antivirus.CHUNK + 17))  # several INSTREAM chunks
    assert big.status == antivirus.CLEAN


def test_no_verdict_is_never_a_pass(tmp_path):
    assert antivirus.Scanner(str(tmp_path / "absent.sock"), timeout=1).scan_bytes(b"x").waits
    assert antivirus.parse_reply("stream: OK").status == antivirus.CLEAN
    assert antivirus.parse_reply("INSTREAM size limit exceeded. ERROR").waits
    assert antivirus.parse_reply("").waits
    assert antivirus.parse_reply("stream: Whatever ERROR").waits
    assert antivirus.parse_reply("stream: Win.Test FOUND").signature == "Win.Test"


@pytest.mark.parametrize("reply", [b"", b"garbage without terminator", b"stream: OK" * 10000, b"OK\0"])
def test_hostile_or_broken_daemon_makes_files_wait(tmp_path, reply):
    """A daemon that closes without a word, babbles or answers something else: no verdict, the file
    waits. A bare "OK" is a clean verdict (the control case: the fake daemon is heard)."""
    path = str(tmp_path / "fake.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            seen = b""
            while not seen.endswith(b"\0\0\0\0"):  # the end of the INSTREAM
                chunk = conn.recv(65536)
                if not chunk:
                    break
                seen += chunk
            conn.sendall(reply)  # then closes

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    verdict = antivirus.Scanner(path, timeout=10).scan_bytes(b"data")
    t.join(5)
    server.close()
    if reply == b"OK\0":
        assert verdict.status == antivirus.CLEAN
    else:
        assert verdict.waits and verdict.detail


def test_scanning_off_is_said_and_scans_nothing(monkeypatch, caplog):
    monkeypatch.delenv("DEMAT_CLAMD_SOCKET", raising=False)
    monkeypatch.setattr(antivirus, "_warned_off", False)
    with caplog.at_level("WARNING"):
        assert antivirus.scan_bytes(EICAR).status == antivirus.OFF
    assert "désactivée" in caplog.text


# --------------------------------------------------------------------------------------------- inbox
def test_inbox_infected_files_go_to_quarantine_never_to_the_store(settings, scanning):
    _drop(settings, "PES-sain.xml", b"<PES_Aller>sain</PES_Aller>")
    _drop(settings, "PES-eicar.xml", EICAR)
    _drop(settings, "acte-piege.zip", _zip_with("annexe.pdf", b"%PDF-1.4 " + CUSTOM_MARKER), flow="actes")
    started = sweep(settings)
    assert [s.flow for s in started] == ["helios"]  # only the clean one is a dossier
    assert _count(settings.database_url, Dossier) == 1
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        shas = set(s.scalars(select(Artefact.sha256)))
    assert len(shas) == 1 and store.get(next(iter(shas))) == b"<PES_Aller>sain</PES_Aller>"
    stored = b"".join(p.read_bytes() for p in Path(settings.store_root).rglob("*") if p.is_file())
    assert EICAR not in stored and CUSTOM_MARKER not in stored
    quarantine = settings.state_dir / "quarantine"
    kept = sorted(p for p in quarantine.rglob("*") if p.is_file() and not p.name.endswith(".erreur.txt"))
    assert len(kept) == 2 and any(p.read_bytes() == EICAR for p in kept)
    assert oct(quarantine.stat().st_mode & 0o777) == "0o700"
    for p in kept:
        note = p.with_name(p.name + ".erreur.txt").read_text()
        assert "antivirus" in note and "quarantaine" in note and "Correction" in note
    refusals = {p.parent.parent.name: p.read_text() for p in settings.inbox_root.rglob("rejetes/*.erreur.txt")}
    assert "Demat.Test.EICAR" in refusals["helios"] and "PES-eicar.xml" in refusals["helios"]
    assert "Demat.Test.Marqueur" in refusals["actes"] and "acte-piege.zip" in refusals["actes"]
    assert not any(p.is_file() and not p.name.endswith(".erreur.txt") for p in settings.inbox_root.rglob("rejetes/*"))
    assert sweep(settings) == []  # idempotent: nothing left to take


def test_clamd_down_the_file_waits_then_goes_on(settings, clamd, monkeypatch, tmp_path):
    monkeypatch.setenv("DEMAT_CLAMD_SOCKET", str(tmp_path / "clamd-arrete.sock"))
    _drop(settings, "PES-attente.xml", b"<PES_Aller>attente</PES_Aller>")
    _drop(settings, "PES-attente-eicar.xml", EICAR)
    assert sweep(settings) == [] and sweep(settings) == []
    assert _count(settings.database_url, Dossier) == 0  # not passed
    assert not list(settings.inbox_root.rglob("rejetes/*"))  # not refused
    claimed = sorted(p for _, _, p in inbox.list_claimed(settings.work_dir))
    assert len(claimed) == 2
    note = waiting_note(settings, "saint-sever", "helios", claimed[0]).read_text()
    assert "en attente" in note and "injoignable" in note
    monkeypatch.setenv("DEMAT_CLAMD_SOCKET", str(clamd.socket))  # clamd back
    assert len(sweep(settings)) == 1
    assert _count(settings.database_url, Dossier) == 1
    assert not list(inbox.list_claimed(settings.work_dir))
    assert not any((settings.work_dir / "attente-antivirus").rglob("*.txt"))
    assert len(list(settings.inbox_root.rglob("rejetes/*.erreur.txt"))) == 1


def test_api_upload_scan_refuses_infected(settings, scanning, tmp_path):
    tmp = tmp_path / ".api-x.part"
    tmp.write_bytes(EICAR)
    why = refuse_if_infected(settings, "saint-sever", "helios", "PES.xml", tmp)
    assert why and "Demat.Test.EICAR" in why and "quarantaine" in why
    assert not tmp.exists()
    tmp.write_bytes(b"<sain/>")
    assert refuse_if_infected(settings, "saint-sever", "helios", "PES.xml", tmp) is None and tmp.exists()


# --------------------------------------------------------------------------------------------- resubmission, answers
def _dossier(settings: Settings) -> str:
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite="saint-sever", flow="actes", original_name="a.zip", sha256="a" * 64,
                           size=1, doc_type="")
        return d.id


def test_resubmission_infected_is_refused_and_journaled(settings, scanning, tmp_path):
    dossier_id = _dossier(settings)
    staged = actions.stage_upload(settings, "saint-sever", "actes", "corrige.zip",
                                  io.BytesIO(_zip_with("acte.pdf", EICAR)))
    with pytest.raises(actions.ActionRefused) as exc:
        actions.resubmit(settings, dossier_id, staged, actor="agent1", roles=frozenset({"agent"}))
    assert exc.value.kind == "antivirus" and exc.value.status == 422 and "quarantaine" in exc.value.message
    assert not staged.path.exists() and not list((settings.inbox_root / "saint-sever" / "actes").glob("*.zip"))
    with session_scope(settings.database_url) as s:
        events = list(s.scalars(select(JournalEntry.event).where(JournalEntry.dossier_id == dossier_id)))
    assert "antivirus" in events


def test_answer_folder_infected_files_leave_the_folder(settings, scanning, tmp_path):
    folder = tmp_path / "reponse"
    folder.mkdir()
    (folder / "courrier.pdf").write_bytes(b"%PDF-1.4 sain")
    (folder / "piege.pdf").write_bytes(b"%PDF-1.4 " + CUSTOM_MARKER)
    files = answers.read_reply_folder(folder)
    with pytest.raises(answers.AnswerRefused, match="Demat.Test.Marqueur"):
        answers.scan_documents(settings, "saint-sever", files.documents, files.folder)
    assert sorted(p.name for p in folder.iterdir()) == ["courrier.pdf"]
    answers.scan_documents(settings, "saint-sever", [("ok.pdf", b"%PDF-1.4 sain")])  # clean: nothing raised


def test_answer_waits_when_clamd_is_down(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("DEMAT_CLAMD_SOCKET", str(tmp_path / "absent.sock"))
    with pytest.raises(answers.AnswerWaits, match="en attente"):
        answers.scan_documents(settings, "saint-sever", [("a.pdf", EICAR)])
