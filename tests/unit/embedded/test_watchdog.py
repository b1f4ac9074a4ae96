"""The launcher's watchdog restarts an Airflow component that died, and only that one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _in_fresh_process(code: str, tmp_path) -> str:
    """Run a scenario in its own interpreter: the watchdog looks at its caller's process tree, and
    the test session's tree holds a whole platform (the e2e fixture lives until the session ends)."""
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


RESTART = """
    import os, signal, sys, time
    from pathlib import Path
    from embedded.watchdog import COMPONENTS, Watchdog, airflow_components

    tmp = Path(sys.argv[1])
    fake = tmp / "airflow"  # its processes look like components ("... airflow scheduler")
    fake.write_text(f"#!{sys.executable}\\nimport time\\ntime.sleep(600)\\n")
    fake.chmod(0o755)

    def wait(predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timeout"
            time.sleep(0.1)

    me = os.getpid()
    messages = []
    dog = Watchdog(fake, dict(os.environ), tmp, tmp, api_port=1, grace=0.3, log=messages.append)
    try:
        assert dog.check(me) == []  # missing, but not yet for `grace` seconds
        time.sleep(0.4)
        assert sorted(dog.check(me)) == sorted(COMPONENTS)
        wait(lambda: set(airflow_components(me, 1)) == set(COMPONENTS))
        before = airflow_components(me, 1)
        os.kill(before["triggerer"], signal.SIGKILL)
        wait(lambda: dog.check(me) == ["triggerer"])
        wait(lambda: "triggerer" in airflow_components(me, 1))
        after = airflow_components(me, 1)
        assert after["triggerer"] != before["triggerer"]
        assert {k: v for k, v in after.items() if k != "triggerer"} == {
            k: v for k, v in before.items() if k != "triggerer"}
        assert dog.restarts == {"scheduler": 1, "dag-processor": 1, "triggerer": 2, "api-server": 1}, dog.restarts
        assert any("« triggerer » arrêté" in m and "relance n° 2" in m for m in messages), messages
        assert (tmp / "airflow-triggerer.log").exists()
    finally:
        dog.stop(grace=5)
    assert all(p.poll() is not None for p in dog.started)
    assert airflow_components(me, 1) == {}
    print("ok")
"""

BACKOFF = """
    import os, sys, time
    from pathlib import Path
    from embedded.watchdog import Watchdog

    tmp = Path(sys.argv[1])
    crashing = tmp / "airflow"
    crashing.write_text(f"#!{sys.executable}\\nraise SystemExit(1)\\n")
    crashing.chmod(0o755)
    dog = Watchdog(crashing, dict(os.environ), tmp, tmp, api_port=1, grace=0.2, log=lambda m: None)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            dog.check(os.getpid())
            time.sleep(0.05)
        # 0.2 s, then 0.4, 0.8, 1.6: at most 4 starts each in 3 s, not one every 0.2 s
        assert 2 <= dog.restarts["scheduler"] <= 4, dog.restarts
    finally:
        dog.stop(grace=2)
    print("ok")
"""


def test_a_killed_component_is_started_again_and_the_others_left_alone(tmp_path):
    assert _in_fresh_process(RESTART, tmp_path).strip().endswith("ok")


def test_a_crash_loop_backs_off(tmp_path):
    assert _in_fresh_process(BACKOFF, tmp_path).strip().endswith("ok")


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
