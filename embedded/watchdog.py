"""Keep every Airflow component of the embedded platform alive.

`airflow standalone` starts the scheduler, dag-processor, triggerer and API server once and never
restarts them: a component killed by the OOM killer or by hand stays dead, and with it the
scheduling, the inbox watch or the UI. The launcher checks the process tree every half second
and, once a component has been missing for a few seconds, starts it again with the same
environment. Everything the dead component was doing is recovered by Airflow itself (orphaned
task instances are adopted or reset) and by demat's idempotent steps.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
EXECUTOR_WORKER_TITLE = "airflow worker -- LocalExecutor"  # the pool processes a scheduler forks
ORPHAN_TITLE = "airflow "  # what a dead component's forked children call themselves (workers, serve-logs)


def become_subreaper() -> bool:
    """Make orphaned descendants (the pool workers of a killed scheduler) children of this process.

    Without it they are adopted by init, out of the launcher's sight, and keep the dead
    scheduler's database connection open (inherited across fork) with its row locks: the new
    scheduler then skips the locked DAG runs for good.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def airflow_components(root_pid: int, api_port: int) -> dict[str, int]:
    """Airflow components alive below `root_pid`, by name (the oldest process of each).

    The API server renames itself ("airflow api_server -- host:... port:N") and setproctitle
    overwrites its environment block, so components are recognised by their command line.
    """
    found: dict[str, int] = {}
    try:
        tree = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in tree:
        try:
            cmd = " ".join(p.cmdline())
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for name in COMPONENTS:
            if f"airflow {name}" in cmd or (name == "api-server" and f"port:{api_port}" in cmd):
                found[name] = min(found.get(name, p.pid), p.pid)
    return found


class Watchdog:
    """Restarts a component missing for `grace` seconds; its output goes to airflow-<name>.log.

    A component that keeps dying waits twice as long before each new start (up to 5 minutes).
    """

    def __init__(self, airflow_bin: Path, env: dict[str, str], cwd: Path, log_dir: Path, api_port: int,
                 *, grace: float = 3.0, log: Callable[[str], None] = print) -> None:
        self.airflow_bin, self.env, self.cwd, self.log_dir = airflow_bin, env, cwd, log_dir
        self.api_port, self.grace, self.log = api_port, grace, log
        self.missing_since: dict[str, float] = {}
        self.started: list[subprocess.Popen] = []
        self.restarts: dict[str, int] = {}
        self.recent: dict[str, list[float]] = {}  # restart times, for the backoff of a crash loop

    def reap_orphans(self, root_pid: int) -> list[int]:
        """Kill what a dead component forked and left behind (its executor pool workers, its log
        server, adopted by `root_pid` as subreaper: they hold its database connection), and
        collect the zombies of adopted processes. Returns the pids killed."""
        ours = {p.pid for p in self.started}
        killed = []
        try:
            children = psutil.Process(root_pid).children()
        except psutil.NoSuchProcess:
            return killed
        for child in children:
            if child.pid in ours:
                continue
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)
                elif " ".join(child.cmdline()).startswith(ORPHAN_TITLE):
                    child.kill()
                    killed.append(child.pid)
            except (psutil.Error, ChildProcessError):
                continue
        if killed:
            self.log(f"{len(killed)} processus orphelins d'un composant Airflow arrêté : terminés "
                     "(ils gardaient sa connexion à la base et ses verrous)")
        return killed

    def check(self, root_pid: int) -> list[str]:
        """Start again what has been gone for `grace` seconds. Returns the names restarted now."""
        self.reap_orphans(root_pid)
        alive = airflow_components(root_pid, self.api_port)
        now = time.monotonic()
        restarted = []
        for name in COMPONENTS:
            if name in alive:
                self.missing_since.pop(name, None)
                continue
            since = self.missing_since.setdefault(name, now)
            recent = [t for t in self.recent.get(name, []) if now - t < 600]
            if now - since < min(self.grace * 2 ** len(recent), 300):  # a crash loop waits longer each time
                continue
            self.recent[name] = [*recent, now]
            with (self.log_dir / f"airflow-{name}.log").open("ab") as out:
                proc = subprocess.Popen([str(self.airflow_bin), name], env=self.env, cwd=self.cwd, stdout=out,
                                        stderr=subprocess.STDOUT)
            self.started.append(proc)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.missing_since.pop(name)  # the new process shows in the tree at once
            self.log(f"Composant Airflow « {name} » arrêté depuis {now - since:.0f} s : relancé (pid {proc.pid}, "
                     f"relance n° {self.restarts[name]})")
            restarted.append(name)
        return restarted

    def stop(self, grace: float = 20) -> None:
        """Terminate what this watchdog started (standalone's own children are stopped with it)."""
        alive = [p for p in self.started if p.poll() is None]
        for p in alive:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in alive:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
