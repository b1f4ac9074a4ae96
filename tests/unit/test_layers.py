"""The layers of DESIGN.md: flows/ and simulators/ never import Airflow; dependencies point one way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> list[str]:
    base = ROOT / package
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in base.rglob("*.py") if "__pycache__" not in p.parts and p.name != "__main__.py"
    )


def test_domain_and_simulators_import_without_airflow():
    mods = _modules("flows") + _modules("simulators")
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k == 'airflow' or k.startswith('airflow.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_flows_does_not_reach_up_into_plugins_or_dags():
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "flows").rglob("*.py")
        if any(tok in p.read_text(encoding="utf-8") for tok in ("import demat_airflow", "from demat_airflow", "from dags"))
    ]
    assert offenders == []
