"""The launcher's watchdog restarts an Airflow component that died, and only that one."""

from __future__ import annotations

import os
import signal
import sys
import time

from embedded.watchdog import COMPONENTS, Watchdog, airflow_components


def _fake_airflow(tmp_path):
    """An `airflow` executable whose processes look like components ("... airflow scheduler")."""
    path = tmp_path / "airflow"
    path.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    path.chmod(0o755)
    return path


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_killed_component_is_started_again_and_the_others_left_alone(tmp_path):
    messages: list[str] = []
    dog = Watchdog(_fake_airflow(tmp_path), dict(os.environ), tmp_path, tmp_path, api_port=1, grace=0.3,
                   log=messages.append)
    try:
        assert dog.check(os.getpid()) == []  # missing, but not yet for `grace` seconds
        time.sleep(0.4)
        assert sorted(dog.check(os.getpid())) == sorted(COMPONENTS)
        _wait(lambda: set(airflow_components(os.getpid(), 1)) == set(COMPONENTS))
        before = airflow_components(os.getpid(), 1)
        os.kill(before["triggerer"], signal.SIGKILL)
        _wait(lambda: dog.check(os.getpid()) == ["triggerer"])
        _wait(lambda: "triggerer" in airflow_components(os.getpid(), 1))
        after = airflow_components(os.getpid(), 1)
        assert after["triggerer"] != before["triggerer"]
        assert {k: v for k, v in after.items() if k != "triggerer"} == {
            k: v for k, v in before.items() if k != "triggerer"}
        assert dog.restarts == {"scheduler": 1, "dag-processor": 1, "triggerer": 2, "api-server": 1}
        assert any("« triggerer » arrêté" in m and "relance n° 2" in m for m in messages)
        assert (tmp_path / "airflow-triggerer.log").exists()
    finally:
        dog.stop(grace=5)
    assert all(p.poll() is not None for p in dog.started)
    assert airflow_components(os.getpid(), 1) == {}


def test_a_crash_loop_backs_off(tmp_path):
    crashing = tmp_path / "airflow"
    crashing.write_text(f"#!{sys.executable}\nraise SystemExit(1)\n")
    crashing.chmod(0o755)
    dog = Watchdog(crashing, dict(os.environ), tmp_path, tmp_path, api_port=1, grace=0.2, log=lambda m: None)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            dog.check(os.getpid())
            time.sleep(0.05)
        # 0.2 s, then 0.4, 0.8, 1.6: at most 4 starts each in 3 s, not one every 0.2 s
        assert 2 <= dog.restarts["scheduler"] <= 4
    finally:
        dog.stop(grace=2)


LAUNCHER = r'''
import json, os, signal, subprocess, sys, time
from pathlib import Path
from embedded.watchdog import EXECUTOR_WORKER_TITLE, Watchdog, become_subreaper
assert become_subreaper()
# a "scheduler" that forks an executor pool worker and a log server, then is killed with SIGKILL
scheduler = subprocess.Popen([sys.executable, "-c", (
    "import subprocess, sys, time\n"
    f"for title in ({EXECUTOR_WORKER_TITLE + ': <idle>'!r}, 'airflow serve-logs'):\n"
    "    subprocess.Popen([title, '-c', 'import time; time.sleep(600)'], executable=sys.executable)\n"
    "time.sleep(600)\n")])
time.sleep(1.5)
os.kill(scheduler.pid, signal.SIGKILL)
scheduler.wait()
time.sleep(0.5)
dog = Watchdog(Path(sys.executable), dict(os.environ), Path.cwd(), Path.cwd(), api_port=1, log=print)
killed = dog.reap_orphans(os.getpid())
time.sleep(0.5)
dog.reap_orphans(os.getpid())  # collects the zombie
left = [p for p in __import__("psutil").Process().children() if p.status() != "zombie"]
print(json.dumps({"killed": len(killed), "left": len(left)}))
'''


def test_a_dead_schedulers_executor_workers_are_reaped():
    """Orphaned pool workers would keep the dead scheduler's database connection and row locks."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", LAUNCHER], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"killed": 2, "left": 0}
    assert "processus orphelins d'un composant Airflow arrêté" in out.stdout
