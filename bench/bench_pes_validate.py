"""Benchmark: validate_pes on a big PES_Aller (default 500 MB), against `xmllint --stream --schema`.

    .venv/bin/python bench/bench_pes_validate.py [MB]        (or BENCH_PES_MB=500)

Generates the PES in a temporary directory (BENCH_TMPDIR to choose where; generate_pes_file
streams it, nothing is built in memory), then in the same run:
  - validate_pes (encoding + project XSD + business rules, streamed) in a child process;
  - the baseline `xmllint --noout --stream --schema schemas/pes/PES_Aller.xsd` on the same file
    (structure only: no encoding check, no business rule).
Each one runs in its own child process, spawned by a minimal launcher that reads
resource.getrusage(RUSAGE_CHILDREN) after it: the peak RSS of that child alone (the launcher's
memory is not counted: the child is spawned with posix_spawn).
Wall time on a shared machine is noisy: CPU time (user+sys) is reported too.
Prints a table, then machine lines: FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio.
Target: 500 MB validated with a peak RSS under 300 MB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.helios.generate import generate_pes_file  # noqa: E402

MB = 1000 * 1000
MIB = 1024 * 1024
RSS_TARGET_MB = 300

CHILD = """
import json, sys
from flows.helios.validate import validate_pes
r = validate_pes(sys.argv[1], max_bytes=4 * 1024 ** 3)
print(json.dumps({"ok": r.ok, "errors": len(r.errors), "warnings": len(r.warnings),
                  "rules": sorted({f.rule for f in r.findings}), "bordereaux": r.summary.get("bordereaux"),
                  "pieces": r.summary.get("pieces"), "montant_total": r.summary.get("montant_total")}))
"""


# A minimal launcher (python -S, nothing imported) spawns the measured command and reads
# resource.getrusage(RUSAGE_CHILDREN): it has exactly one child, so the figure is that child's.
# Going through it matters: on Linux a child's ru_maxrss starts at its parent's RSS at fork time,
# and the bench process itself is big after generating the file.
LAUNCHER = """
import json, os, resource, sys, time
t = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status = os.waitpid(pid, 0)
wall = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": u.ru_utime + u.ru_stime, "maxrss_kib": u.ru_maxrss,
                  "rc": os.waitstatus_to_exitcode(status)}))
"""


def run_child_exact(cmd: list[str]) -> dict:
    """Run cmd through the launcher: wall time, CPU time and peak RSS of that child alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        launcher = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, *cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, check=True
        )
        err.seek(0)
        figures = json.loads(launcher.stdout.decode().strip().splitlines()[-1])
        lines = launcher.stdout.decode().strip().splitlines()[:-1]
        out.write("\n".join(lines).encode())
        return {
            "wall": figures["wall"],
            "cpu": figures["cpu"],
            "rss_mb": figures["maxrss_kib"] * 1024 / MIB,  # Linux: ru_maxrss is in KiB
            "rc": figures["rc"],
            "stdout": "\n".join(lines),
            "stderr": err.read().decode(errors="replace"),
        }


def figure(name: str, value: float, unit: str, baseline: float | None) -> str:
    ratio = f"{value / baseline:.2f}" if baseline else "-"
    base = f"{baseline:.2f}" if baseline is not None else "-"
    return f"FIGURE\t{name}\t{value:.2f}\t{unit}\t{base}\t{ratio}"


def main() -> int:
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BENCH_PES_MB", "500"))
    xmllint = shutil.which("xmllint")
    schema = ROOT / "schemas" / "pes" / "PES_Aller.xsd"
    with tempfile.TemporaryDirectory(prefix="bench-pes-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        path = Path(tmp) / "PES_BENCH.xml"
        t0 = time.perf_counter()
        size = generate_pes_file(path, mb * MB, pieces_per_bordereau=50, lines_per_piece=2)
        gen_s = time.perf_counter() - t0
        size_mb = size / MB
        print(f"PES généré : {size} octets ({size_mb:.0f} Mo) en {gen_s:.1f} s", flush=True)

        demat = run_child_exact([sys.executable, "-c", CHILD, str(path)])
        if demat["rc"] != 0:
            print(demat["stderr"], file=sys.stderr)
            return 1
        result = json.loads(demat["stdout"].strip().splitlines()[-1])
        base = None
        if xmllint:
            base = run_child_exact([xmllint, "--noout", "--stream", "--schema", str(schema), str(path)])
            base["valid"] = base["rc"] == 0
        else:
            print("xmllint introuvable (paquet libxml2-utils) : pas de référence", file=sys.stderr)

    d_tp = size_mb / demat["wall"]
    d_cpu_tp = size_mb / demat["cpu"] if demat["cpu"] else 0.0
    rows = [
        ("fichier", f"{size_mb:.0f} Mo", ""),
        ("validate_pes : verdict", "valide" if result["ok"] else f"refusé ({result['rules']})", ""),
        ("validate_pes : bordereaux / pièces", f"{result['bordereaux']} / {result['pieces']}", ""),
        ("durée (mur)", f"{demat['wall']:.1f} s", f"{base['wall']:.1f} s" if base else "-"),
        ("débit (mur)", f"{d_tp:.1f} Mo/s", f"{size_mb / base['wall']:.1f} Mo/s" if base else "-"),
        ("temps CPU", f"{demat['cpu']:.1f} s", f"{base['cpu']:.1f} s" if base else "-"),
        ("débit (CPU)", f"{d_cpu_tp:.1f} Mo/s", f"{size_mb / base['cpu']:.1f} Mo/s" if base and base["cpu"] else "-"),
        ("RSS max", f"{demat['rss_mb']:.0f} Mio", f"{base['rss_mb']:.0f} Mio" if base else "-"),
    ]
    if base:
        rows.insert(2, ("xmllint : verdict", "valide" if base["valid"] else "refusé", ""))
    print()
    print(f"{'mesure':<36} {'validate_pes':>22} {'xmllint --stream':>18}")
    for name, a, b in rows:
        print(f"{name:<36} {a:>22} {b:>18}")
    ok_rss = demat["rss_mb"] < RSS_TARGET_MB
    print(f"\nObjectif RSS < {RSS_TARGET_MB} Mo pour {size_mb:.0f} Mo : {'ATTEINT' if ok_rss else 'NON ATTEINT'}")
    print()
    print(figure("pes_file_size", size_mb, "MB", None))
    print(figure("pes_generate_throughput", size_mb / gen_s, "MB/s", None))
    print(figure("pes_validate_throughput_wall", d_tp, "MB/s", size_mb / base["wall"] if base else None))
    print(figure("pes_validate_throughput_cpu", d_cpu_tp, "MB/s", size_mb / base["cpu"] if base and base["cpu"] else None))
    print(figure("pes_validate_seconds_wall", demat["wall"], "s", base["wall"] if base else None))
    print(figure("pes_validate_peak_rss", demat["rss_mb"], "MiB", base["rss_mb"] if base else None))
    return 0 if result["ok"] and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
