"""The local settings hook: which processes preload the domain, and that everything it names exists."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "plugins" / "airflow_local_settings.py"


def _load():
    spec = importlib.util.spec_from_file_location("demat_local_settings_under_test", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "forks"), [
    (["airflow", "scheduler"], True),
    (["/venv/bin/airflow", "scheduler", "--pid", "x"], True),
    (["airflow", "celery", "worker", "-q", "default"], True),
    (["airflow", "standalone"], False),
    (["airflow", "api-server"], False),
    (["airflow", "dag-processor"], False),
    (["airflow", "triggerer"], False),
    (["airflow", "tasks", "run", "scheduler"], False),
    (["airflow", "celery", "flower"], False),
    (["python", "-m", "pytest"], False),
])
def test_only_the_processes_that_fork_tasks_preload(argv, forks):
    assert _load().forks_task_processes(argv) is forks


def test_every_preloaded_module_exists_and_imports():
    """A renamed domain module would silently stop being preloaded: fail here instead."""
    hook = _load()
    assert hook.preload(hook.PRELOADED) == list(hook.PRELOADED)


def test_a_missing_module_is_logged_not_fatal(caplog):
    hook = _load()
    assert hook.preload(("flows.no_such_module", "json")) == ["json"]
    assert "flows.no_such_module" in caplog.text


def test_a_scheduler_process_has_pandas_before_any_task_and_an_api_server_does_not():
    """Run the hook the way Airflow does (imported by name from the plugins folder) in a fresh interpreter."""
    code = ("import sys; sys.argv = {argv!r}; sys.path.insert(0, {plugins!r}); import airflow_local_settings; "
            "print('pandas' in sys.modules, 'flows.pipeline.steps' in sys.modules)")
    for argv, expected in ((["airflow", "scheduler"], "True True"), (["airflow", "api-server"], "False False")):
        out = subprocess.run([sys.executable, "-c", code.format(argv=argv, plugins=str(HOOK.parent))],
                             capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
        assert out.stdout.split() == expected.split(), out.stderr
