"""Fixtures of the hostile corpus: a canary secret outside the platform, a loopback listener that
must never be contacted, and the corpus written once per session."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from flows.config import load_config
from flows.settings import REPO
from tests.hostile.corpus import CANARY, Ctx, corpus, write


class Listener:
    """Counts every TCP connection made to it (an XXE or XInclude fetch would be one)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                continue
            self.connections.append(addr)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="session")
def listener():
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture(scope="session")
def demo_config():
    return load_config(REPO / "flows" / "config" / "demo.yaml")


@pytest.fixture(scope="session")
def ctx(tmp_path_factory, listener, demo_config) -> Ctx:
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    canary_dir = tmp_path_factory.mktemp("canari")
    canary = canary_dir / "secret.txt"
    canary.write_text(CANARY + "\n")
    coll = demo_config.collectivite("saint-sever")
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic="PESHOSTILE01", seed=7)
    acte = generate_acte_zip(collectivite=coll, numero="HOST2026_01")
    return Ctx(canary=canary, port=listener.port, good_pes=pes, good_acte=acte)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, ctx) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    return {item.name: write(item, folder, ctx) for item in corpus()}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with (size, mtime_ns): what changed between two snapshots."""
    out = {}
    for p in root.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out
