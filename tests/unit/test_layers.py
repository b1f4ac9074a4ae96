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


FORBIDDEN_FOR_COUNTERPARTS = ("flows.helios.validate", "flows.quality", "flows.signature.verify", "flows.archive.check")


def _imports_of(path: Path, module: str) -> set[str]:
    """Every module an import statement of this file names (module level or inside a function)."""
    import ast

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out.update(f"{prefix}.{a.name}" for a in node.names)
    return out


def _path_of(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_counterparts_never_reach_demat_checks_even_transitively():
    """The simulators judge independently of demat: no import chain from simulators/ reaches demat's
    validators, quality gate, signature verifier or archive check (issue 18)."""
    start = _modules("simulators")
    seen: dict[str, str | None] = {m: None for m in start}  # module -> who imported it
    todo = list(start)
    offenders = []
    while todo:
        mod = todo.pop()
        path = _path_of(mod)
        if path is None:
            continue
        for name in _imports_of(path, mod):
            parts = name.split(".")
            for i in range(len(parts), 0, -1):  # the longest prefix that is a repo module (or package)
                target = ".".join(parts[:i])
                if _path_of(target) is not None:
                    break
            else:
                continue
            if target.startswith(FORBIDDEN_FOR_COUNTERPARTS) or name.startswith(FORBIDDEN_FOR_COUNTERPARTS):
                chain, at = [name], mod
                while at is not None:
                    chain.append(at)
                    at = seen.get(at)
                offenders.append(" <- ".join(chain))
            if target not in seen:
                seen[target] = mod
                todo.append(target)
    assert offenders == [], "\n".join(offenders)
    assert "simulators.dgfip" in seen and "simulators.xmlsig" in seen  # the walk did cover the counterparts
