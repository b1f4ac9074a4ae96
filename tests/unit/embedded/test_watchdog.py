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
