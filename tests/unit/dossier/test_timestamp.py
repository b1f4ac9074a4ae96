"""RFC 3161 timestamps of journal entries with a real `openssl ts` TSA, on real PostgreSQL."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import text

from flows.dossier import service
from flows.dossier.db import engine, session_scope
from flows.dossier.timestamp import (
    HttpTsa,
    JournalTimestamp,
    LocalTsa,
    TimestampError,
    TsaUnavailable,
    ensure_table,
    stamp_pending,
    token_time,
    verify_timestamps,
    verify_token,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl absent")


@pytest.fixture(scope="module")
def tsa(tmp_path_factory) -> LocalTsa:
    return LocalTsa.create(tmp_path_factory.mktemp("tsa"))


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tsa_certificate_is_a_critical_timestamping_one(tsa):
    cert = x509.load_pem_x509_certificate(tsa.cert_file.read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert (tsa.directory / "tsa-key.pem").stat().st_mode & 0o077 == 0
    assert LocalTsa.create(tsa.directory).cert_file.read_bytes() == tsa.cert_file.read_bytes()  # reused


def test_token_verifies_for_its_digest_only(tsa, tmp_path):
    digest = hashlib.sha256(b"entree de journal").hexdigest()
    token = tsa.timestamp(digest)
    check = verify_token(token, digest, ca_file=tsa.ca_file)
    assert check.ok, check.reason
    assert abs(check.at - datetime.now(UTC)) < timedelta(minutes=2)
    other = hashlib.sha256(b"autre").hexdigest()
    bad = verify_token(token, other, ca_file=tsa.ca_file)
    assert not bad.ok and "invalide" in bad.reason
    # a token from another TSA (another root) is refused
    other_tsa = LocalTsa.create(tmp_path / "autre")
    assert not verify_token(other_tsa.timestamp(digest), digest, ca_file=tsa.ca_file).ok
    # an independent check with the openssl command line itself
    (tmp_path / "t.der").write_bytes(token)
    p = subprocess.run(["openssl", "ts", "-verify", "-digest", digest, "-in", str(tmp_path / "t.der"), "-token_in",
                        "-CAfile", str(tsa.ca_file)], capture_output=True, text=True)
    assert p.returncode == 0 and "Verification: OK" in p.stdout
    with pytest.raises(TimestampError):
        tsa.timestamp("pas une empreinte")
    assert not verify_token(b"\x30\x03garbage", digest, ca_file=tsa.ca_file).ok


def test_entries_wait_while_the_tsa_is_down_then_are_stamped(demat_db, tsa):
    ensure_table(engine(demat_db))
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="helios", original_name="PES.xml", sha256="c" * 64, size=3)
        service.transition(s, d, "valide", message="ok")
    down = HttpTsa(f"http://127.0.0.1:{_closed_port()}/tsa", timeout=2)
    with session_scope(demat_db) as s:
        r = stamp_pending(s, down)
    assert r.stamped == 0 and r.waiting == 2 and "injoignable" in r.reason and "plus tard" in r.reason
    with session_scope(demat_db) as s:
        r = stamp_pending(s, tsa)
        assert (r.stamped, r.waiting, r.reason) == (2, 0, "")
        service.note(s, service.get(s, d.id), event="info", message="après")
    with session_scope(demat_db) as s:
        assert stamp_pending(s, tsa).stamped == 1  # only the new entry
        assert stamp_pending(s, tsa).stamped == 0
        rows = s.query(JournalTimestamp).all()  # one token per pass, on the newest entry then
        assert len(rows) == 2 and all(r.tsa == LocalTsa.name for r in rows)
        assert all(abs(r.at - token_time(r.token)) < timedelta(seconds=1) for r in rows)
        check = verify_timestamps(s, ca_file=tsa.ca_file)
        assert check.ok and check.stamped == 3 and check.unstamped == 0


def test_a_modified_row_is_caught_even_with_its_hash_rewritten(demat_db, tsa):
    from flows.dossier.journal import entry_hash

    ensure_table(engine(demat_db))
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="actes", original_name="a.zip", sha256="d" * 64, size=3)
        service.transition(s, d, "valide", message="Document valide.")
        stamp_pending(s, tsa)
    with session_scope(demat_db) as s:
        target = s.execute(text("SELECT max(id) FROM journal")).scalar()
        s.execute(text("UPDATE journal SET message = 'Document refusé.' WHERE id = :i"), {"i": target})
    with session_scope(demat_db) as s:
        from flows.dossier.models import JournalEntry

        entry = s.get(JournalEntry, target)
        entry.hash = entry_hash(entry)  # a forger recomputes the stored hash too
    with session_scope(demat_db) as s:
        from flows.dossier.journal import verify_chain

        assert verify_chain(s).ok  # the last entry, hash rewritten: the chain alone cannot see it
        check = verify_timestamps(s, ca_file=tsa.ca_file)
        assert not check.ok and check.first_bad_id == target and "ne correspondent plus" in check.reason


def test_a_forged_middle_entry_with_the_chain_rewritten_after_it_is_caught_by_the_anchor(demat_db, tsa):
    """One token covers a pass's entries through the chain: rewriting an old entry and every hash
    after it (so verify_chain passes) changes the anchor's hash, which the token no longer matches."""
    from flows.dossier.journal import entry_hash, verify_chain
    from flows.dossier.models import JournalEntry

    ensure_table(engine(demat_db))
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="actes", original_name="b.zip", sha256="f" * 64, size=3)
        service.transition(s, d, "valide", message="Document valide.")
        service.note(s, service.get(s, d.id), event="info", message="troisième")
        assert stamp_pending(s, tsa).stamped == 3
    with session_scope(demat_db) as s:
        entries = s.query(JournalEntry).order_by(JournalEntry.id).all()
        entries[1].message = "Document refusé."
        prev = entries[0].hash
        for e in entries[1:]:  # the forger rewrites the chain from the forged entry on
            e.prev_hash = prev
            e.hash = entry_hash(e)
            prev = e.hash
        anchor = entries[-1].id
    with session_scope(demat_db) as s:
        assert verify_chain(s).ok
        check = verify_timestamps(s, ca_file=tsa.ca_file)
        assert not check.ok and check.first_bad_id == anchor and check.stamped == 0


def test_http_tsa_refuses_bad_urls():
    with pytest.raises(ValueError, match="URL"):
        HttpTsa("ftp://tsa.example")
    with pytest.raises(TsaUnavailable):
        LocalTsa("/nonexistent/tsa")


def test_the_platform_stamps_its_journal_and_demat_journal_verify_checks_the_tokens(demat_db, tmp_path, monkeypatch):
    """What demat_watch runs (stamp_journal on the state's TSA) and what an auditor runs
    (`demat journal verify`): intact → exit 0 with the counts; a forged row → exit 1."""
    import subprocess
    import sys

    from flows.dossier.journal import entry_hash
    from flows.dossier.models import JournalEntry
    from flows.dossier.timestamp import stamp_journal

    monkeypatch.delenv("DEMAT_TSA_URL", raising=False)
    ensure_table(engine(demat_db))
    assert "Horodatage en attente" in stamp_journal(demat_db, tmp_path).reason  # no TSA set up yet: it waits
    LocalTsa.create(tmp_path / "tsa")
    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="actes", original_name="a.zip", sha256="e" * 64, size=3)
        service.transition(s, d, "valide", message="Document valide.")
    r = stamp_journal(demat_db, tmp_path)
    assert (r.stamped, r.waiting) == (2, 0)

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", "journal", "verify", "--database-url", demat_db,
                               "--tsa-ca", str(tmp_path / "tsa" / "ca.pem")], capture_output=True, text=True, timeout=120)

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Journal intègre : 2 entrée(s)" in ok.stdout and "Horodatages RFC 3161 valides : 2" in ok.stdout
    with session_scope(demat_db) as s:
        target = s.execute(text("SELECT max(id) FROM journal")).scalar()
        s.execute(text("UPDATE journal SET message = 'Document refusé.' WHERE id = :i"), {"i": target})
    with session_scope(demat_db) as s:
        entry = s.get(JournalEntry, target)
        entry.hash = entry_hash(entry)  # the forger rewrites the hash: only the timestamp can tell
    bad = verify()
    assert bad.returncode == 1 and "Horodatage INVALIDE" in bad.stdout, bad.stdout + bad.stderr
