"""`make demo` from a clone that stands on its own (issue 15): no ../shared beside it.

The working tree is copied (tracked and untracked files, `git ls-files -co --exclude-standard`) into an
empty temporary folder; from there, with DEMAT_REFERENCE_DIR unset and the copy first on the import
path, `python -m embedded run` starts the embedded platform (PostgreSQL, simulators, airflow
standalone) and `python -m embedded demo` (`make run`, then `make demo`) drops the demo's documents,
signs as the officials, and must see every dossier reach its expected final state, archived ones included (the SAE judges with the schemas shipped in the
copy). Before the fix every dossier ended "Refusé par le SAE (code 200)".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from embedded.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def outside_basetemp():
    # outside pytest's basetemp (as tests/e2e/conftest.py): another pytest run on the machine prunes
    # old basetemps, which would pull the data folder from under the running PostgreSQL
    folder = Path(tempfile.mkdtemp(prefix="demat-clone-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_make_demo_from_a_standalone_clone(outside_basetemp):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("dépôt git introuvable : la copie du clone a besoin de git ls-files")
    tmp_path = outside_basetemp
    repo = tmp_path / "utilisateur" / "demat"
    repo.mkdir(parents=True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file() and not (ROOT / rel).is_symlink():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    assert not (repo.parent / "shared").exists()
    state = tmp_path / "etat"
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMAT_")}
    env.update({"PYTHONPATH": os.pathsep.join([str(repo), str(repo / "plugins")]), "DEMAT_STATE": str(state),
                "DEMAT_COLLECT_SECONDS": "10", "DEMAT_INBOX_MIN_AGE": "1.0", "DEMAT_SIM_DELAY": "1",
                "DEMAT_SIM_LATER_DELAY": "5", "PYTHONDONTWRITEBYTECODE": "1"})
    port = free_port()
    # `make run` then `make demo`, as the README tells a user: the platform runs from the copy
    log = (state / "launcher.log").open("ab")
    launcher = subprocess.Popen([sys.executable, "-m", "embedded", "run", "--state", str(state), "--port", str(port)],
                                cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (state / "ready").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, \
                (state / "launcher.log").read_text(errors="replace")[-4000:]
            time.sleep(1)
        outputs = []
        for _attempt in range(2):  # a demo client timing out on a loaded machine is retried once
            p = subprocess.run([sys.executable, "-m", "embedded", "demo", "--state", str(state), "--port", str(port),
                                "--timeout", "900"], cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
            outputs.append(p.stdout + p.stderr)
            if p.returncode == 0 or "Traceback" not in outputs[-1]:
                break
    finally:
        os.killpg(launcher.pid, signal.SIGINT)  # the launcher stops what it started
        try:
            launcher.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
    output = outputs[-1]
    assert p.returncode == 0, "\n====\n".join(o[-4000:] for o in outputs)
    assert "Démonstration réussie" in output, output[-6000:]
    assert "code 200" not in output and "problème sur les fichiers du paquet" not in output, output[-6000:]
    launcher_log = state / "launcher.log"
    if launcher_log.exists():  # the platform ran the copy's code, not the checkout's
        assert str(ROOT) + "/flows" not in launcher_log.read_text(errors="replace")
