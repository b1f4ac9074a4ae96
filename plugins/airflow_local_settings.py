"""Airflow's local settings hook (imported by every Airflow process at start-up).

demat uses it for one thing: the processes that fork task processes (the scheduler, whose
LocalExecutor workers fork each task, and Celery workers) import the domain's heavy libraries
once, before forking, so each task process inherits them instead of importing them again.
Measured on this machine (bench/RESULTS.md): pandas for the tiers gate ~0.9 CPU-s, pyHanko for
PAdES ~0.6, paramiko, signxml and the pipeline ~0.3, paid by every task process otherwise.
Other processes (API server, DAG processor, triggerer, CLI) import nothing more.
Set DEMAT_PRELOAD=0 to turn it off.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

PRELOADED = (
    "lxml.etree",
    "paramiko",
    "signxml",
    "pyhanko.sign",
    "pandas",  # the tiers gate imports it lazily (small files never need it); large files and refusals do
    "flows.quality.gate",
    "flows.helios.validate",
    "flows.actes.validate",
    "flows.signature.xades",
    "flows.pipeline.steps",
    "flows.pipeline.collect",
    "flows.pipeline.deposit",
    "flows.pipeline.ingest",
    "demat_airflow.dags",
    "demat_airflow.context",
)


def forks_task_processes(argv: list[str]) -> bool:
    """True for `airflow scheduler` and `airflow celery worker` (not `airflow standalone` itself)."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    return args[:1] == ["scheduler"] or args[:2] == ["celery", "worker"]


def preload(modules: tuple[str, ...] = PRELOADED) -> list[str]:
    """Import what task processes will need; a module that fails to import is only logged."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - the task will import it (and fail loudly) itself
            logging.getLogger(__name__).warning("demat: préchargement impossible de %s", name, exc_info=True)
    return loaded


if os.environ.get("DEMAT_PRELOAD", "1") != "0" and forks_task_processes(sys.argv):
    preload()
