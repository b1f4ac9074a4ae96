"""SFTP transport against a real asyncssh server on loopback (paramiko client, pinned host key)."""

from __future__ import annotations

import hashlib
import shutil
import time

import paramiko
import pytest

from flows.transport.errors import (
    AuthenticationRefused,
    HostKeyMismatch,
    InvalidRemoteName,
    RemoteConflict,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTooLarge,
    TransientError,
    TransportUnavailable,
)
from flows.transport.local import LocalEndpoint
from flows.transport.sftp import SftpEndpoint, parse_host_key
from simulators.keys import ensure_ed25519_key, write_authorized_keys
from simulators.sftpd import Account, ServerThread, SftpServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One counterpart: root with switches outside the jail, jail with depot/ and retour/."""
    base = tmp_path_factory.mktemp("sftp")
    client_key = base / "client" / "id_ed25519"
    client_pub = ensure_ed25519_key(client_key)
    root = base / "cp"
    jail = root / "sftp"
    (jail / "depot").mkdir(parents=True)
    (jail / "retour").mkdir()
    (root / "secret.txt").write_text("hors de la prison")
    write_authorized_keys(root / "authorized_keys", [client_pub])
    server = SftpServer(
        host_key=root / "host_key",
        accounts=[Account("demat", jail, root / "authorized_keys")],
        switch_dir=root,
        name="test",
    )
    with ServerThread([server]):
        yield {"server": server, "root": root, "jail": jail, "client_key": client_key, "base": base}


@pytest.fixture
def clean(gateway):
    for sub in ("depot", "retour"):
        for p in (gateway["jail"] / sub).iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    for flag in ("DOWN", "HANG"):
        (gateway["root"] / flag).unlink(missing_ok=True)
    return gateway


def endpoint(gw, *, host_key: str | None = None, username: str = "demat", timeout: float = 5) -> SftpEndpoint:
    server = gw["server"]
    return SftpEndpoint(
        "127.0.0.1", server.port, username, gw["client_key"], host_key or server.host_key_line, timeout=timeout
    )


def test_upload_is_atomic_and_idempotent(clean):
    depot = clean["jail"] / "depot"
    data = b"<PES_Aller/>" * 10_000
    with endpoint(clean) as ep:
        assert ep.upload_atomic("/depot", "PES1.xml", data) is True
        assert ep.upload_atomic("/depot", "PES1.xml", data) is False  # already there: not sent twice
        assert ep.listdir("/depot") == ["PES1.xml"]
        assert ep.exists("/depot/PES1.xml")
        assert ep.read("/depot/PES1.xml") == data
    assert sorted(p.name for p in depot.iterdir()) == ["PES1.xml"]  # no duplicate, no .part left
    assert hashlib.sha256((depot / "PES1.xml").read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_upload_from_a_local_path(clean, tmp_path):
    src = tmp_path / "TDT-EACT--214002933--20261125-1.tar.gz"
    src.write_bytes(bytes(range(256)) * 1000)
    with endpoint(clean) as ep:
        assert ep.upload_atomic("/depot", src.name, src) is True
        assert ep.upload_atomic("/depot", src.name, src) is False
    assert (clean["jail"] / "depot" / src.name).read_bytes() == src.read_bytes()


def test_same_name_different_content_is_a_conflict(clean):
    with endpoint(clean) as ep:
        ep.upload_atomic("/depot", "A.xml", b"version 1")
        with pytest.raises(RemoteConflict, match="contenu différent"):
            ep.upload_atomic("/depot", "A.xml", b"version 2 !")
        with pytest.raises(RemoteConflict):
            ep.upload_atomic("/depot", "A.xml", b"version 2")  # same size, different bytes
    assert (clean["jail"] / "depot" / "A.xml").read_bytes() == b"version 1"


def test_wrong_pinned_host_key_is_refused_and_nothing_is_uploaded(clean, tmp_path):
    other = ensure_ed25519_key(tmp_path / "other_host_key")
    ep = endpoint(clean, host_key=other)
    with pytest.raises(HostKeyMismatch, match="épinglée") as err:
        with ep:
            ep.upload_atomic("/depot", "X.xml", b"secret")
    assert not isinstance(err.value, TransientError)  # never retried blindly
    assert list((clean["jail"] / "depot").iterdir()) == []


def test_pinned_key_of_another_type_is_refused(clean):
    rsa = paramiko.RSAKey.generate(2048)
    line = f"{rsa.get_name()} {rsa.get_base64()}"
    with pytest.raises(HostKeyMismatch):
        with endpoint(clean, host_key=line):
            pass


def test_garbage_host_key_is_a_permanent_error():
    with pytest.raises(Exception, match="clé d'hôte épinglée"):
        parse_host_key("not a key")
    with pytest.raises(Exception, match="clé d'hôte épinglée"):
        parse_host_key("ssh-ed25519 !!!pas-du-base64")


def test_known_hosts_line_is_accepted(clean):
    line = f"[127.0.0.1]:{clean['server'].port} {clean['server'].host_key_line}"
    with endpoint(clean, host_key=line) as ep:
        assert ep.listdir("/depot") == []


def test_chroot_escape_attempts_stay_in_the_jail(clean):
    root, jail = clean["root"], clean["jail"]
    with endpoint(clean) as ep:
        assert ep.listdir("/../..") == []  # the jail root holds only folders
        assert not ep.exists("/../secret.txt")
        assert not ep.exists("../../secret.txt")
        with pytest.raises(RemoteNotFound):
            ep.read("/../secret.txt")
        with pytest.raises(RemoteNotFound):
            ep.read("/../authorized_keys")
        # writing "above" the root lands inside the jail, never in the counterpart root
        assert ep.upload_atomic("/../..", "evade.txt", b"x") is True
        assert (jail / "evade.txt").exists() and not (root / "evade.txt").exists()
        (jail / "evade.txt").unlink()
        with pytest.raises(InvalidRemoteName):
            ep.upload_atomic("/depot", "../../authorized_keys", b"ssh-ed25519 AAAA")
        with pytest.raises(InvalidRemoteName):
            ep.upload_atomic("/depot", ".hidden", b"x")
        # links could point out of the jail: refused by the server
        with pytest.raises(OSError):
            ep.sftp.symlink("/etc/passwd", "/depot/passwd")
    assert not (jail / "depot" / "passwd").exists()
    assert (root / "secret.txt").read_text() == "hors de la prison"


def test_listing_ignores_part_dot_files_and_folders(clean):
    depot = clean["jail"] / "depot"
    (depot / ".A.xml.part").write_bytes(b"half")
    (depot / "B.xml.part").write_bytes(b"half")
    (depot / ".cache").write_bytes(b"x")
    (depot / "sous-dossier").mkdir()
    (depot / "C.xml").write_bytes(b"complete")
    with endpoint(clean) as ep:
        assert ep.listdir("/depot") == ["C.xml"]
        assert ep.list("/depot") == ["C.xml"]


def test_crash_between_upload_and_rename_is_completed_by_a_retry(clean):
    depot = clean["jail"] / "depot"
    data = b"contenu complet du PES" * 100
    (depot / ".P.xml.part").write_bytes(data[:50])  # crashed in the middle of the write
    (depot / ".Q.xml.part").write_bytes(data)  # crashed after the write, before the rename
    with endpoint(clean) as ep:
        assert ep.listdir("/depot") == []  # the platform's half uploads are invisible
        assert ep.upload_atomic("/depot", "P.xml", data) is True
        assert ep.upload_atomic("/depot", "Q.xml", data) is True
    assert (depot / "P.xml").read_bytes() == data
    assert (depot / "Q.xml").read_bytes() == data
    assert sorted(p.name for p in depot.iterdir()) == ["P.xml", "Q.xml"]


def test_read_cap_move_mkdir(clean):
    with endpoint(clean) as ep:
        ep.upload_atomic("/retour", "ACQUIT_P.xml", b"x" * 1000)
        with pytest.raises(RemoteTooLarge):
            ep.read("/retour/ACQUIT_P.xml", max_bytes=999)
        assert ep.read("/retour/ACQUIT_P.xml", max_bytes=1000) == b"x" * 1000
        with pytest.raises(RemoteNotFound):
            ep.read("/retour/absent.xml")
        ep.mkdir_p("/retour/traite/2026")
        ep.mkdir_p("/retour/traite/2026")  # idempotent
        assert ep.move("/retour/ACQUIT_P.xml", "/retour/traite/2026/ACQUIT_P.xml") is True
        assert ep.move("/retour/ACQUIT_P.xml", "/retour/traite/2026/ACQUIT_P.xml") is False  # already done
        assert ep.listdir("/retour") == []
        assert ep.listdir("/retour/traite/2026") == ["ACQUIT_P.xml"]
        ep.upload_atomic("/retour", "B.xml", b"b")
        ep.upload_atomic("/retour/traite/2026", "B.xml", b"other")
        with pytest.raises(RemoteConflict):
            ep.move("/retour/B.xml", "/retour/traite/2026/B.xml")
        with pytest.raises(RemoteNotFound):
            ep.move("/retour/none.xml", "/retour/traite/none.xml")
        with pytest.raises(RemoteNotFound):
            ep.listdir("/nulle-part")


def test_down_switch_refuses_connections_as_transient(clean):
    (clean["root"] / "DOWN").touch()
    with pytest.raises(TransportUnavailable) as err:
        with endpoint(clean, timeout=3):
            pass
    assert isinstance(err.value, TransientError)
    (clean["root"] / "DOWN").unlink()
    with endpoint(clean) as ep:  # back up
        assert ep.upload_atomic("/depot", "after.xml", b"ok") is True


def test_hang_switch_times_out_as_transient(clean):
    (clean["root"] / "HANG").touch()
    start = time.monotonic()
    with pytest.raises(TransportUnavailable):
        with endpoint(clean, timeout=1):
            pass
    assert time.monotonic() - start < 10


def test_nobody_listening_is_transient(tmp_path, gateway):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ep = SftpEndpoint("127.0.0.1", port, "demat", gateway["client_key"], gateway["server"].host_key_line, timeout=2)
    with pytest.raises(TransportUnavailable):
        ep.connect()


def test_unknown_key_or_user_is_refused_permanently(clean, tmp_path):
    with pytest.raises(AuthenticationRefused):
        with endpoint(clean, username="intrus"):
            pass
    stranger = tmp_path / "stranger"
    ensure_ed25519_key(stranger)
    ep = SftpEndpoint("127.0.0.1", clean["server"].port, "demat", stranger, clean["server"].host_key_line, timeout=5)
    with pytest.raises(AuthenticationRefused):
        ep.connect()


def test_reconnects_after_the_server_dropped_the_session(clean):
    with endpoint(clean) as ep:
        ep.upload_atomic("/depot", "1.xml", b"1")
        ep._client.get_transport().close()  # the link dies under us
        with pytest.raises(TransportUnavailable):
            ep.listdir("/depot")
        assert ep.listdir("/depot") == ["1.xml"]  # next call reconnects


# -- the same contract over a local folder ----------------------------------------------------


def test_local_endpoint_same_contract(tmp_path):
    root = tmp_path / "drop"
    (root / "depot").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("x")
    ep = LocalEndpoint(root)
    assert ep.upload_atomic("/depot", "A.xml", b"1") is True
    assert ep.upload_atomic("/depot", "A.xml", b"1") is False
    with pytest.raises(RemoteConflict):
        ep.upload_atomic("/depot", "A.xml", b"2")
    (root / "depot" / ".B.xml.part").write_bytes(b"half")
    assert ep.listdir("/depot") == ["A.xml"]
    assert ep.upload_atomic("/depot", "B.xml", b"full") is True
    assert sorted(p.name for p in (root / "depot").iterdir()) == ["A.xml", "B.xml"]
    with pytest.raises(RemotePermissionDenied):
        ep.read("/../secret.txt")
    (root / "depot" / "link").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(RemotePermissionDenied):
        ep.read("/depot/link")
    assert ep.listdir("/depot") == ["A.xml", "B.xml"]  # symlinks are not listed
    with pytest.raises(RemoteTooLarge):
        ep.read("/depot/B.xml", max_bytes=2)
    ep.mkdir_p("/depot/traite")
    assert ep.move("/depot/A.xml", "/depot/traite/A.xml") is True
    assert ep.move("/depot/A.xml", "/depot/traite/A.xml") is False
    with pytest.raises(InvalidRemoteName):
        ep.upload_atomic("/depot", "a/b", b"x")
    with pytest.raises(TransportUnavailable):
        LocalEndpoint(tmp_path / "absent")


def test_endpoints_share_the_protocol(tmp_path, gateway):
    from flows.transport.base import Endpoint

    assert isinstance(LocalEndpoint(tmp_path), Endpoint)
    assert isinstance(endpoint(gateway), Endpoint)


def test_server_refuses_shell_exec_forwarding_and_passwords(clean):
    with endpoint(clean) as ep:
        with pytest.raises(paramiko.SSHException):
            ep._client.exec_command("id", timeout=3)[1].read()
        with pytest.raises(paramiko.SSHException):
            ep._client.invoke_shell()
        with pytest.raises(paramiko.ChannelException):
            ep._client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0), timeout=3)
    t = paramiko.Transport(("127.0.0.1", clean["server"].port))
    try:
        t.start_client(timeout=5)
        with pytest.raises(paramiko.BadAuthenticationType) as err:
            t.auth_password("demat", "motdepasse")
        assert err.value.allowed_types == ["publickey"]
    finally:
        t.close()


def test_backoff_retries_transient_errors_only():
    from flows.transport.retry import with_backoff

    delays: list[float] = []
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransportUnavailable("refusé")
        return "ok"

    assert with_backoff(flaky, base_delay=1, jitter=0, sleep=delays.append) == "ok"
    assert delays == [1, 2]

    def conflict():
        calls.append(1)
        raise RemoteConflict("différent")

    calls.clear()
    with pytest.raises(RemoteConflict):
        with_backoff(conflict, sleep=delays.append)
    assert len(calls) == 1  # permanent: no retry
    calls.clear()
    with pytest.raises(TransportUnavailable):
        with_backoff(lambda: (_ for _ in ()).throw(TransportUnavailable("x")), attempts=2, sleep=lambda d: None)
