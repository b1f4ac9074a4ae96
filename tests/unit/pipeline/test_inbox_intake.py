"""The real inbox trigger (InboxTrigger.run() in an event loop) and the real sweep on a real
PostgreSQL: whatever is dropped, each entry becomes a dossier or is set aside with an explanation,
good files always get through, no byte is lost, the trigger never raises; a slow writer's file is
claimed only once it is closed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import tempfile
import unicodedata
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from demat_airflow.triggers import InboxTrigger
from flows.dossier.db import session_scope
from flows.dossier.models import Dossier
from flows.dossier.store import ArtefactStore
from flows.pipeline import inbox
from flows.pipeline.ingest import sweep
from flows.settings import REPO, Settings

COLL, FLOW = "saint-sever", "helios"
TEMP_SUFFIXES = inbox.IGNORED_SUFFIXES


def make_settings(base: Path, database_url: str) -> Settings:
    state = base / "state"
    s = Settings(state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=database_url,
                 store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
                 reference_dir=base)
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    return s


def inotify_watches() -> int:
    """inotify watches this process holds (the kernel's own account, /proc/self/fdinfo)."""
    n = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError):
            n += Path(f"/proc/self/fdinfo/{fd}").read_text().count("inotify wd:")
    return n


async def until(predicate, seconds: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not (result := predicate()):
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)
    return result


def run_trigger(trigger: InboxTrigger, body) -> list[dict]:
    """Run the trigger's own async generator while `body(payloads)` acts on the inbox; fail if the
    trigger ever raised."""
    payloads: list[dict] = []

    async def main():
        async def consume():
            async for event in trigger.run():
                payloads.append(event.payload)

        task = asyncio.create_task(consume())
        try:
            await body(payloads)
            await asyncio.sleep(0.1)
            assert not task.done(), f"le déclencheur s'est arrêté : {task.exception()!r}"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())
    return payloads


def leftovers(s: Settings) -> list[str]:
    folder = s.inbox_root / COLL / FLOW
    return [os.fsdecode(n) for n in os.listdir(os.fsencode(folder)) if os.fsdecode(n) not in inbox.RESERVED_DIRS]


# --------------------------------------------------------------------------------------------- slow writers
def _slow_writer_case(tmp_path, demat_db, *, pause: float, write_during_pause: bool):
    s = make_settings(tmp_path, demat_db)
    folder = s.inbox_root / COLL / FLOW
    first, rest = b"<PES_Aller>" + b"A" * 50_000, b"B" * 50_000 + b"</PES_Aller>"
    trigger = InboxTrigger(inbox_root=str(s.inbox_root), work_dir=str(s.work_dir), poll_interval=0.2, min_age=0.5,
                           events="inotify")

    async def body(payloads):
        await until(lambda: inotify_watches() > 0, 10, "le déclencheur ne surveille pas les dossiers")
        path = folder / "PES_lent.xml"
        with open(path, "wb") as fh:
            fh.write(first if write_during_pause else first + rest)
            fh.flush()
            await asyncio.sleep(pause)  # longer than min_age: a stability rule would take it now
            assert path.exists() and payloads == [], "fichier pris avant d'être fermé par celui qui l'écrit"
            assert list(inbox.list_claimed(s.work_dir)) == []
            if write_during_pause:
                fh.write(rest)
        await until(lambda: payloads, 10, "fichier fermé mais jamais pris")
        assert payloads == [{"claimed": ["saint-sever/helios/PES_lent.xml"]}]  # as the agent knows it

    run_trigger(trigger, body)
    [started] = sweep(s, claim_stable=False)
    with session_scope(s.database_url) as session:
        d = session.get(Dossier, started.dossier_id)
        assert d.sha256 == hashlib.sha256(first + rest).hexdigest() and d.size == len(first + rest)
        assert d.original_name == "PES_lent.xml"
    assert ArtefactStore(s.store_root).get(d.sha256) == first + rest


@pytest.mark.timeout(60)
def test_writer_pausing_5_s_mid_file_is_claimed_whole_after_close(tmp_path, demat_db):
    _slow_writer_case(tmp_path, demat_db, pause=5.0, write_during_pause=True)


@pytest.mark.timeout(60)
def test_writer_keeping_the_file_open_is_waited_for(tmp_path, demat_db):
    _slow_writer_case(tmp_path, demat_db, pause=2.0, write_during_pause=False)


def test_events_mode_falls_back_on_a_network_share_setting(tmp_path):
    assert inbox.events_wanted(tmp_path, "poll") is False
    assert inbox.events_wanted(tmp_path, "inotify") is True
    assert inbox.filesystem_type(tmp_path) != ""


# --------------------------------------------------------------------------------------------- property
LATIN1 = b"Facture \xe9cole.xml"
NOTABLE = [LATIN1, b"a" * 251 + b".xml", b"PES_ok.xml", b"-rf.xml", b".cache", b"x.part", b"a\nb.xml",
           "e\u0301cole.xml".encode(), b" espace .xml", b"x.xml.ok", "fa\u202eimx.pdf".encode(), b"\x01\x7f",
           "\u00e9".encode() * 127, b"~$verrou.xml"]


def _fs_name(raw: bytes) -> bool:
    return b"/" not in raw and b"\0" not in raw and raw not in (b".", b"..") and 0 < len(raw) <= 255 \
        and os.fsdecode(raw) not in inbox.RESERVED_DIRS and not raw.startswith(b"PES_temoin")


text_names = st.tuples(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=90),
    st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]),
).map(lambda t: unicodedata.normalize(t[1], t[0]).encode("utf-8"))
names = st.one_of(st.sampled_from(NOTABLE), st.binary(min_size=1, max_size=255), text_names,
                  st.integers(230, 255).map(lambda n: b"n" * (n - 4) + b".xml")).filter(_fs_name)
entries = st.lists(st.tuples(names, st.sampled_from(["file", "file", "file", "symlink", "directory", "fifo"]),
                             st.sampled_from(["rename", "inplace"])),
                   min_size=1, max_size=6, unique_by=lambda e: e[0])


def expected_dossier(raw: bytes, kind: str) -> bool:
    """The rule, stated independently of the code: an ordinary file whose name is UTF-8, at most
    240 bytes, without control or invisible characters, and not a temporary name."""
    if kind != "file" or len(raw) > 240:
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        return False
    return not (text.startswith((".", "~")) or text.endswith(TEMP_SUFFIXES))


@pytest.fixture(scope="module")
def shared_db(pg_server):
    from flows.dossier.db import create_schema

    name = "t_inbox_property_" + uuid.uuid4().hex[:6]
    pg_server.ensure_database(name)
    url = pg_server.url(name)
    create_schema(url)
    return url


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["inotify", "poll"])
@hsettings(max_examples=12, derandomize=True, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                  HealthCheck.filter_too_much])
@given(dropped=entries)
@example(dropped=[(LATIN1, "file", "inplace"), (b"b" * 251 + b".xml", "file", "rename"), (b"PES_bon.xml", "file", "inplace")])
@example(dropped=[(b"passwd.xml", "symlink", "rename"), (b"tube.xml", "fifo", "inplace"),
                  (b"Dossier", "directory", "inplace"), (b"x.xml", "file", "inplace"), (b"x.xml.ok", "file", "inplace")])
@example(dropped=[(b"a\nb.xml", "file", "inplace"), ("fa\u202eimx.pdf".encode(), "file", "rename"),
                  ("e\u0301cole.xml".encode(), "file", "inplace"), (b"-rf.xml", "file", "rename"),
                  (b".cache", "file", "inplace"), (b"\x01\x7f", "directory", "inplace")])
def test_whatever_is_dropped_each_entry_is_a_dossier_or_set_aside(shared_db, mode, dropped):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        s = make_settings(base, shared_db)
        folder = s.inbox_root / COLL / FLOW
        staging = base / "staging"
        staging.mkdir()
        secret = base / "secret.txt"
        secret.write_bytes(b"ne jamais lire")
        tag = uuid.uuid4().hex
        contents: dict[bytes, bytes] = {}
        good = [(b"PES_temoin_%d.xml" % i, f"<temoin {tag} {i}/>".encode()) for i in range(2)]

        def make(raw: bytes, kind: str, how: str, i: int) -> None:
            where = (staging if how == "rename" else folder) / os.fsdecode(raw)
            data = f"<PES_Aller>{tag}-{i}</PES_Aller>".encode()
            if kind == "file":
                where.write_bytes(data)
            elif kind == "symlink":
                os.symlink(secret, where)
            elif kind == "directory":
                where.mkdir()
                (where / "dedans.xml").write_bytes(data)
            else:
                os.mkfifo(where)
            contents[raw] = data
            if how == "rename":
                os.rename(where, folder / os.fsdecode(raw))

        trigger = InboxTrigger(inbox_root=str(s.inbox_root), work_dir=str(s.work_dir), poll_interval=0.1,
                               min_age=0.3, events=mode, abandon_age=0)

        async def body(payloads):
            if mode == "inotify":
                await until(lambda: inotify_watches() > 0, 10, "le déclencheur ne surveille pas les dossiers")
            contents[good[0][0]] = good[0][1]
            (folder / os.fsdecode(good[0][0])).write_bytes(good[0][1])
            for i, (raw, kind, how) in enumerate(dropped):
                make(raw, kind, how, i)
            (folder / os.fsdecode(good[1][0])).write_bytes(good[1][1])  # a good file dropped after them
            contents[good[1][0]] = good[1][1]
            await until(lambda: not leftovers(s), 20, f"entrées restées dans le dossier d'entrée : {leftovers(s)}")

        run_trigger(trigger, body)
        started = sweep(s)
        assert not list(inbox.list_claimed(s.work_dir)), "fichier pris en charge mais jamais enregistré"

        with session_scope(s.database_url) as session:
            recorded = {d.sha256: d for d in session.scalars(
                select(Dossier).where(Dossier.id.in_([x.dossier_id for x in started])))}
            names_ok = {sha: d.original_name for sha, d in recorded.items()}
        store = ArtefactStore(s.store_root)

        rejected_dir = folder / inbox.REJECTED
        kept: list[tuple[str, object]] = []
        for entry in os.scandir(rejected_dir):
            if entry.name.endswith(".erreur.txt"):
                continue
            text = Path(entry.path + ".erreur.txt").read_text(encoding="utf-8")
            assert "saint-sever/helios/" in text and "Correction" in text and str(base) not in text
            mode_ = os.lstat(entry.path).st_mode
            if stat.S_ISLNK(mode_):
                kept.append(("symlink", os.readlink(entry.path)))
            elif stat.S_ISDIR(mode_):
                kept.append(("directory", Path(entry.path, "dedans.xml").read_bytes()))
            elif stat.S_ISFIFO(mode_):
                kept.append(("fifo", None))
            else:
                kept.append(("file", Path(entry.path).read_bytes()))
            assert len(entry.name.encode()) + len(".erreur.txt") <= 255

        all_entries = [(good[0][0], "file")] + [(r, k) for r, k, _ in dropped] + [(good[1][0], "file")]
        for raw, kind in all_entries:
            data = contents[raw]
            sha = hashlib.sha256(data).hexdigest()
            if expected_dossier(raw, kind):
                assert sha in recorded, f"{raw!r} : fichier correct jamais devenu un dossier"
                assert store.get(sha) == data  # the original bytes, intact
                shown = names_ok[sha]
                shown.encode("utf-8")
                assert len(shown.encode()) <= 255
                continue
            assert sha not in recorded, f"{raw!r} ({kind}) enregistré alors qu'il devait être mis de côté"
            want = {"file": ("file", data), "directory": ("directory", data), "symlink": ("symlink", str(secret)),
                    "fifo": ("fifo", None)}[kind]
            assert want in kept, f"{raw!r} ({kind}) ni dossier ni mis de côté : perdu"
            kept.remove(want)
        assert kept == [], f"mis de côté en trop : {kept}"
        assert secret.read_bytes() == b"ne jamais lire"
        assert {hashlib.sha256(g[1]).hexdigest() for g in good} <= set(recorded)


# --------------------------------------------------------------------------------------------- server paths
@pytest.mark.parametrize("flow, name, data", [
    ("helios", "PES_casse.xml", b"<PES_Aller><EnTetePES>tronque"),
    ("actes", "acte_casse.zip", b"PK\x03\x04 pas une archive"),
])
def test_refusal_texts_name_the_file_as_the_agent_knows_it(tmp_path, demat_db, flow, name, data):
    from flows.dossier import service
    from flows.pipeline import steps

    s = make_settings(tmp_path, demat_db)
    (s.inbox_root / COLL / flow / name).write_bytes(data)
    [started] = sweep(s, min_age=0)
    assert steps.validate(s, started.dossier_id).state == "refuse_validation"
    server = str(s.state_dir)
    [text] = [p.read_text(encoding="utf-8") for p in (s.inbox_root / COLL / flow / inbox.REJECTED).iterdir()
              if p.name.endswith(".erreur.txt")]
    assert f"saint-sever/{flow}/{name}" in text and server not in text
    with session_scope(s.database_url) as session:
        report = service.artefact(session.get(Dossier, started.dossier_id), "validation_report")
        shown = ArtefactStore(s.store_root).get(report.sha256).decode("utf-8")
    assert f'"file": "saint-sever/{flow}/{name}"' in shown and server not in shown
