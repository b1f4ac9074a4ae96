"""The embedded platform, started for real (PostgreSQL, simulators, airflow standalone) in a temp state."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from embedded.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"  # screenshots for review
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
os.environ.setdefault("DEMAT_LEGACY_PKCS12", "1")  # officials' PKCS#12 kept (docs/signature.md); the demo test uses tokens


@dataclass
class Platform:
    state: Path
    port: int
    proc: subprocess.Popen

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets(self) -> dict:
        return json.loads((self.state / "secrets.json").read_text())

    @property
    def database_url(self) -> str:
        from embedded.postgres import EmbeddedPostgres

        return EmbeddedPostgres(self.state / "postgres", port=int((self.state / "postgres.port").read_text())).url("demat")

    def drop(self, coll: str, flow: str, name: str, data: bytes) -> str:
        """Drop a file into an inbox as an agent's software would (written beside, then renamed),
        and return its sha256 (what the dossier is found by)."""
        folder = self.state / "inbox" / coll / flow
        tmp = folder / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def wait(predicate, deadline: float, what: str, *, tick=None, explain=None):
        """Poll `predicate` every 2 s (calling `tick` first) until it returns something truthy, and
        return that; fail the test with `what` (and `explain()`) at the monotonic `deadline`."""
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            found = predicate()
            if found:
                return found
            time.sleep(2)
        pytest.fail(f"not within the time budget: {what}" + (f"\n{explain()}" if explain else ""))

    def airflow_processes(self) -> dict[str, int]:
        """Airflow components alive under this platform (descendants of its launcher), by name."""
        from embedded.watchdog import airflow_components

        return airflow_components(self.proc.pid, self.port)


def _processes_of(state: Path, port: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("DEMAT_STATE") == str(state) or f"port:{port}" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


@pytest.fixture(scope="session")
def platform() -> Platform:
    # outside pytest's basetemp: another pytest run on the machine prunes old basetemps, which
    # would pull the data folder from under the running PostgreSQL
    state = Path(tempfile.mkdtemp(prefix="demat-e2e-"))
    port = free_port()
    log = (state / "launcher.log").open("ab")
    env = {**os.environ, "DEMAT_STATE": str(state), "DEMAT_COLLECT_SECONDS": "10", "DEMAT_INBOX_MIN_AGE": "1.0",
           # the counterparts answer after 1 s and the SAE (and later letters) after 5 s, not 2 s/30 s
           "DEMAT_SIM_DELAY": "1", "DEMAT_SIM_LATER_DELAY": "5"}
    from tests.conftest import REFERENCE

    if REFERENCE.is_dir():  # the counterparts judge by the official schemas where the tests have them
        env.setdefault("DEMAT_REFERENCE_DIR", str(REFERENCE))
    from tests.clamav import available, write_database

    if available() and "DEMAT_CLAMAV_DB" not in env:  # the launcher starts its clamd on test signatures
        write_database(state / "clamav-db")
        env["DEMAT_CLAMAV_DB"] = str(state / "clamav-db")
    proc = subprocess.Popen([sys.executable, "-m", "embedded", "run", "--state", str(state), "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (state / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (state / "launcher.log").read_text(errors="replace")[-4000:]
            af = state / "airflow-standalone.log"
            tail += "\n--- airflow ---\n" + (af.read_text(errors="replace")[-4000:] if af.exists() else "")
            os.killpg(proc.pid, signal.SIGINT)  # the launcher stops what it started
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the embedded platform did not become ready:\n{tail}")
        time.sleep(1)
    yield Platform(state, port, proc)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        leftovers = [p for p in _processes_of(state, port) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert leftovers == [], f"processes left behind after Ctrl-C: {[p.cmdline() for p in leftovers]}"
    if not os.environ.get("DEMAT_KEEP_E2E_STATE"):
        shutil.rmtree(state, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """The secret scan reads what every other end-to-end test left behind: run it last."""
    items.sort(key=lambda item: "test_no_secrets" in item.nodeid)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, for the pages' tests."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium est absent : installez-le (apt-get install -y chromium) pour les tests d'interface")
    from playwright.sync_api import sync_playwright  # in requirements: a missing package is a failure

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
