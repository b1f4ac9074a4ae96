"""Names and kinds of inbox entries: every name demat derives is bounded and readable, every entry
that cannot be taken is set aside (itself, never followed or opened) with a French explanation."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
import unicodedata
from pathlib import Path

import pytest

from flows.pipeline import inbox

COLL, FLOW = "saint-sever", "helios"
LATIN1 = os.fsdecode(b"Facture \xe9cole.xml")
LONG = "a" * 251 + ".xml"  # 255 bytes: legal on the filesystem


@pytest.fixture
def root(tmp_path) -> Path:
    inbox.ensure_layout(tmp_path / "inbox", [COLL])
    return tmp_path


def folder(root: Path) -> Path:
    return root / "inbox" / COLL / FLOW


def rejected(root: Path) -> dict[str, Path]:
    return {p.name: p for p in (folder(root) / inbox.REJECTED).iterdir()}


def explanation_for(root: Path, kept: Path) -> str:
    text = kept.with_name(kept.name + ".erreur.txt").read_text(encoding="utf-8")
    assert str(root) not in text, "un chemin du serveur est montré à l'agent"
    return text


def intake(root: Path, **kw) -> inbox.Intake:
    kw.setdefault("min_age", 0)
    return inbox.Intake(root / "inbox", root / "work", **kw)


# --------------------------------------------------------------------------------------------- names
def test_readable_name_decodes_latin1_normalises_and_masks_controls():
    assert inbox.readable_name(LATIN1) == "Facture école.xml"
    assert inbox.readable_name("e\u0301cole.xml") == "école.xml"  # NFD (macOS) shown as NFC
    assert inbox.readable_name("a\nb\tc\u202egpj.xml") == "a?b?c?gpj.xml"
    inbox.readable_name(os.fsdecode(bytes(range(1, 256)).replace(b"/", b""))).encode("utf-8")  # never raises


@pytest.mark.parametrize("name", [
    LONG, "é" * 127, LATIN1, "..hidden.xml", "-rf.xml", "  espaces  .xml", "a:b*c?.xml", "x" * 300,
    os.fsdecode(b"\xff" * 255), "\u202e" * 80, "🙂" * 63,
])
def test_derived_names_fit_after_any_prefix_and_suffix(name):
    prefix = "cc-chalosse-tursan-helios-20261207-0123456789_"
    derived = inbox.bounded(prefix, name)
    assert len((derived + ".rapport-qualite.html").encode("utf-8")) <= inbox.NAME_MAX
    assert len(f".{derived}.erreur.txt.tmp".encode()) <= inbox.NAME_MAX
    shown = derived[len(prefix):]
    assert "/" not in shown and shown and not shown.startswith((".", "-", " ", "~"))
    derived.encode("utf-8")  # storable, printable, loggable
    assert inbox.stored_name(name) == inbox.stored_name(name)  # derived, so stable


def test_shorten_keeps_the_extension():
    assert inbox.shorten("a" * 300 + ".xml", 100).endswith("….xml")
    assert len(inbox.shorten("a" * 300 + ".xml", 100).encode()) <= 100
    assert inbox.shorten("court.xml", 100) == "court.xml"


@pytest.mark.parametrize("name, rule", [
    (LATIN1, "NOM-ENCODAGE"), (LONG, "NOM-LONGUEUR"), ("a\nb.xml", "NOM-CARACTERES"),
    ("facture\u202efdp.xml", "NOM-CARACTERES"), ("tab\there.xml", "NOM-CARACTERES"),
    ("PES_x.xml", None), ("e\u0301cole.xml", None), ("-rf.xml", None), ("  espaces.xml", None),
    ("x" * 236 + ".xml", None),  # 240 bytes: still accepted (the API's names are shorter)
])
def test_name_rules(name, rule):
    problem = inbox.name_problem(name)
    assert (problem.rule if problem else None) == rule
    if problem:
        assert problem.why and any(verb in problem.fix for verb in ("renommez", "raccourcissez"))


def test_agent_path_is_what_the_agent_sees():
    assert inbox.agent_path(COLL, FLOW, "PES_x.xml") == "saint-sever/helios/PES_x.xml"
    assert inbox.agent_path(COLL, FLOW, LATIN1) == "saint-sever/helios/Facture école.xml"


def test_claim_derives_a_bounded_name_and_moves_the_bytes(root):
    data = b"<PES_Aller>long</PES_Aller>"
    (folder(root) / LONG).write_bytes(data)
    ino = (folder(root) / LONG).stat().st_ino
    item = next(inbox.entries(root / "inbox"))
    target = inbox.claim(item, root / "work")
    assert target.read_bytes() == data and target.stat().st_ino == ino  # moved, not copied
    assert len(target.name.encode()) <= inbox.NAME_MAX
    assert inbox.original_name(target).endswith(".xml")


def test_reject_beside_with_a_200_character_name_and_a_dossier_key(root):
    name = "d" * 196 + ".zip"
    key = "cc-chalosse-tursan-actes-20261207-0123456789"
    base = inbox.reject_beside(root / "inbox", COLL, "actes", name, b"PK", "Refusé.\n",
                               {".rapport-qualite.html": b"<p/>"}, key=key)
    assert base.read_bytes() == b"PK"
    assert base.with_name(base.name + ".erreur.txt").read_text() == "Refusé.\n"
    again = inbox.reject_beside(root / "inbox", COLL, "actes", name, b"PK", "Refusé.\n", key=key)
    assert again == base  # a retried refusal overwrites, not duplicates


# --------------------------------------------------------------------------------------------- entries
def test_latin1_and_long_names_are_set_aside_while_a_good_file_is_claimed(root):
    for name, data in ((LATIN1, b"latin"), (LONG, b"long"), ("PES_bon.xml", b"bon")):
        (folder(root) / name).write_bytes(data)
    out = intake(root).step()
    assert [p.read_bytes() for p in out.claimed] == [b"bon"] and out.shown == ["saint-sever/helios/PES_bon.xml"]
    kept = {p.read_bytes(): p for p in out.set_aside}
    assert set(kept) == {b"latin", b"long"}
    text = explanation_for(root, kept[b"latin"])
    assert "saint-sever/helios/Facture école.xml" in text and "NOM-ENCODAGE" in text and "Correction" in text
    assert "NOM-LONGUEUR" in explanation_for(root, kept[b"long"])
    assert [p for p in folder(root).iterdir() if p.name != inbox.REJECTED] == []


def test_symlink_is_moved_aside_never_followed(root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("ne pas lire")
    os.symlink(secret, folder(root) / "passwd.xml")
    os.symlink(tmp_path / "absent", folder(root) / "casse.xml")  # dangling
    out = intake(root).step()
    assert out.claimed == [] and len(out.set_aside) == 2
    for kept in out.set_aside:
        assert kept.is_symlink()  # the link itself, not a copy of what it points to
        assert "lien symbolique" in explanation_for(root, kept)
        assert str(secret) not in explanation_for(root, kept)  # the target is not revealed either
    assert secret.read_text() == "ne pas lire"


def test_directory_is_set_aside_whole_once_quiet(root):
    d = folder(root) / "Acte 2026-12"
    d.mkdir()
    (d / "acte.pdf").write_bytes(b"%PDF")
    it = intake(root, min_age=3600)
    assert it.step().set_aside == []  # might still be filling up
    out = intake(root).step()
    [kept] = out.set_aside
    assert (kept / "acte.pdf").read_bytes() == b"%PDF" and "dossier" in explanation_for(root, kept)


def test_reserved_folders_are_left_alone(root):
    (folder(root) / "courriers").mkdir()
    (folder(root) / "reponses").mkdir()
    assert intake(root).step().set_aside == []


@pytest.mark.timeout(20)
def test_fifo_is_never_opened(root):
    os.mkfifo(folder(root) / "tube.xml")
    done = threading.Event()
    result = {}

    def run():
        result["out"] = intake(root).step()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "la lecture d'un tube nommé a bloqué l'arrivée"
    [kept] = result["out"].set_aside
    assert stat.S_ISFIFO(kept.lstat().st_mode) and "tube nommé" in explanation_for(root, kept)


def test_socket_and_device_are_set_aside(root, monkeypatch):
    monkeypatch.chdir(folder(root))  # AF_UNIX paths are short: bind relative to the folder
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind("sock.xml")
        made_device = True
        try:
            os.mknod(folder(root) / "null.xml", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            made_device = False
        out = intake(root).step()
    finally:
        s.close()
    kinds = sorted(stat.S_IFMT(p.lstat().st_mode) for p in out.set_aside)
    assert stat.S_IFSOCK in kinds and (stat.S_IFCHR in kinds) == made_device
    assert all("fichier ordinaire" in explanation_for(root, p) for p in out.set_aside)


def test_unreadable_file(root):
    p = folder(root) / "prive.xml"
    p.write_bytes(b"<x/>")
    p.chmod(0)
    out = intake(root).step()
    if os.access(p, os.R_OK) or os.geteuid() == 0:  # root reads anything: then it is simply taken
        assert [c.read_bytes() for c in out.claimed] == [b"<x/>"]
    else:
        [kept] = out.set_aside
        assert "ENTREE-ILLISIBLE" in explanation_for(root, kept)


def test_temporary_names_wait_then_are_set_aside_when_abandoned(root):
    (folder(root) / ".envoi.xml.part").write_bytes(b"moitie")
    (folder(root) / "PES_a.xml").write_bytes(b"a")
    (folder(root) / "PES_a.xml.ok").write_bytes(b"")
    out = intake(root).step()  # young: a transfer in progress is left alone
    assert [p.read_bytes() for p in out.claimed] == [b"a"] and out.set_aside == []
    assert not (folder(root) / "PES_a.xml.ok").exists()  # the marker went with its file
    out = intake(root, abandon_age=0).step()
    [kept] = out.set_aside
    assert kept.read_bytes() == b"moitie" and not kept.name.startswith(".")
    assert "transfert" in explanation_for(root, kept)


def test_stability_rule_waits_for_an_unchanged_file(root):
    p = folder(root) / "PES_lent.xml"
    p.write_bytes(b"1")
    it = intake(root, min_age=5)
    assert it.step(now=100.0).claimed == []  # first sight
    with p.open("ab") as fh:
        fh.write(b"2")
    assert it.step(now=104.0).claimed == []
    assert it.step(now=108.0).claimed == []  # changed at 104: 4 s only
    assert [c.read_bytes() for c in it.step(now=109.5).claimed] == [b"12"]


def test_with_events_a_file_being_written_waits_for_its_close(root):
    p = folder(root) / "PES_ouvert.xml"
    p.write_bytes(b"moitie")
    it = intake(root, min_age=1, events=True)
    it.note(p, "writing")
    assert it.step(now=0.0).claimed == [] and it.step(now=1000.0).claimed == []  # still open: waits
    it.note(p, "closed")
    assert [c.read_bytes() for c in it.step(now=1000.5).claimed] == [b"moitie"]


def test_stateless_safety_net_with_events_counts_the_change_time(root):
    p = folder(root) / "PES_p.xml"
    p.write_bytes(b"x")
    os.utime(p, (1, 1))  # a client that restores an old modification time (sftp put -p)
    assert inbox.claim_stable(root / "inbox", root / "work", min_age=600, strict=True) == []
    assert len(inbox.claim_stable(root / "inbox", root / "work", min_age=600, strict=False)) == 1


def test_an_entry_that_fails_does_not_stop_the_others(root, monkeypatch):
    for n in ("A.xml", "B.xml", "C.xml"):
        (folder(root) / n).write_bytes(n.encode())
    real = os.rename

    def flaky(src, dst, *a, **kw):
        if str(src).endswith("B.xml"):
            raise OSError(5, "Input/output error")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(inbox.os, "rename", flaky)
    out = intake(root).step()
    assert sorted(p.read_bytes() for p in out.claimed) == [b"A.xml", b"C.xml"]
    assert (folder(root) / "B.xml").exists()  # left for the next look, not lost


def test_nfc_and_nfd_twins_both_kept(root):
    nfc, nfd = unicodedata.normalize("NFC", "école.xml"), unicodedata.normalize("NFD", "école.xml")
    (folder(root) / nfc).write_bytes(b"nfc")
    (folder(root) / nfd).write_bytes(b"nfd")
    out = intake(root).step()
    assert sorted(p.read_bytes() for p in out.claimed) == [b"nfc", b"nfd"]
    assert len({p.name for p in out.claimed}) == 2
    assert {inbox.original_name(p) for p in out.claimed} == {nfc}


def test_a_link_in_place_of_rejetes_is_never_written_through(root, tmp_path):
    elsewhere = tmp_path / "ailleurs"
    elsewhere.mkdir()
    (folder(root) / inbox.REJECTED).rmdir()
    os.symlink(elsewhere, folder(root) / inbox.REJECTED)  # an agent's trap
    (folder(root) / LATIN1).write_bytes(b"latin")
    out = intake(root).step()
    assert list(elsewhere.iterdir()) == []
    assert not (folder(root) / inbox.REJECTED).is_symlink() and [p.read_bytes() for p in out.set_aside] == [b"latin"]
    out = intake(root).step()  # the link itself, moved out of the way, is set aside on the next look
    [kept] = out.set_aside
    assert kept.is_symlink() and os.readlink(kept) == str(elsewhere) and list(elsewhere.iterdir()) == []


def test_a_flow_folder_that_is_a_link_is_not_followed(root, tmp_path):
    outside = tmp_path / "hors"
    outside.mkdir()
    (outside / "precieux.xml").write_bytes(b"x")
    shutil.rmtree(root / "inbox" / COLL / "actes")
    os.symlink(outside, root / "inbox" / COLL / "actes")
    assert [d for _, _, d in inbox.flow_dirs(root / "inbox")] == [folder(root)]
    assert intake(root).step().claimed == [] and (outside / "precieux.xml").exists()
