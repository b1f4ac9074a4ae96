"""Benchmark: the `demat` command line as an agent runs it (issue 15, "Speed").

    .venv/bin/python bench/bench_cli.py [--mb 50] [--runs 5] [--tree DIR]

(--tree DIR: the same measures on another checkout, e.g. `git archive HEAD | tar -x -C DIR`, to
compare against the committed code on the same loaded machine.)

Two measures, each command in its own child process through a minimal launcher that reads
resource.getrusage(RUSAGE_CHILDREN) (wall time, CPU time, peak RSS of that child alone):
  1. `demat validate` of a small PES (a few KB, valid): median wall time and peak RSS over --runs
     runs. Targets: under 0.5 s wall, under 120 MB RSS. Baseline: `python -c pass` (the interpreter's
     own start-up, which no command line can beat).
  2. `demat validate` of a --mb MB PES (encoding, project XSD, business rules, tiers gate) against
     `xmllint --noout --stream --schema` on the official PES_Aller schema (read from
     ../shared/reference: a benchmark is a dev tool; the project schema when it is absent).
     Target: demat at no less than 0.5x xmllint's speed (ratio of throughputs >= 0.5).
Prints FIGURE lines (FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio) for `python -m bench`,
and writes the raw figures to bench/results/<date>-bench_cli-raw.json.
Wall times on a shared machine are noisy: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1000 * 1000
MIB = 1024 * 1024
SMALL_WALL_TARGET_S = 0.5
SMALL_RSS_TARGET_MB = 120
SPEED_RATIO_TARGET = 0.5
OFFICIAL_PES = ROOT / ".." / "shared" / "reference" / "helios" / "schemas" / "schemas_pes_v5.30" / "PES_V2" / "Rev0" / "PES_Aller.xsd"

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


TREE: Path | None = None  # --tree: measure the demat of another checkout (A/B against a commit)


def measure(cmd: list[str]) -> dict:
    """Wall, CPU and peak RSS of one child process running cmd (its output discarded)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # cached bytecode, as a user has
    cwd = ROOT
    if TREE is not None and cmd[:3] == [sys.executable, "-m", "flows.cli"]:
        cwd = TREE  # `python -m` puts the working directory first on sys.path: that tree's flows
    p = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *cmd], cwd=cwd, capture_output=True, check=True, env=env)
    lines = p.stdout.decode().strip().splitlines()
    fig = json.loads(lines[-1])
    return {"wall": fig["wall"], "cpu": fig["cpu"], "rss_mb": fig["maxrss_kib"] * 1024 / MIB, "rc": fig["rc"]}


def figure(name: str, value: float, unit: str, baseline: float | None, note: str = "") -> str:
    ratio = f"{value / baseline:.3f}" if baseline else "-"
    base = f"{baseline:.3f}" if baseline is not None else "-"
    return f"FIGURE\t{name}\t{value:.3f}\t{unit}\t{base}\t{ratio}" + (f"\t{note}" if note else "")


def demat_cmd() -> list[str]:
    if TREE is not None:
        return [sys.executable, "-m", "flows.cli"]
    exe = Path(sys.executable).with_name("demat")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=int(os.environ.get("BENCH_CLI_MB", "50")))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tree", help="measure the demat of this checkout instead (e.g. `git archive HEAD` extracted)")
    args = ap.parse_args()
    global TREE
    TREE = Path(args.tree).resolve() if args.tree else None

    from flows.config import load_config
    from flows.helios.generate import generate_pes, generate_pes_file

    coll = load_config(ROOT / "flows" / "config" / "demo.yaml").collectivites[0]
    raw: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "load_start": load(), "runs": args.runs,
                 "tree": str(TREE or ROOT)}
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        small = Path(tmp) / "PES_PETIT.xml"
        small.write_bytes(generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                       codbud=coll.helios.codbud, nomfic="PESBENCHCLI", seed=1))
        measure([*demat_cmd(), "validate", str(small)])  # warm the page cache and the bytecode
        runs = [measure([*demat_cmd(), "validate", str(small)]) for _ in range(args.runs)]
        if any(r["rc"] != 0 for r in runs):
            print(f"demat validate du petit PES : code {runs[0]['rc']} (attendu 0)", file=sys.stderr)
            ok = False
        floor = [measure([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
        s_wall = statistics.median(r["wall"] for r in runs)
        s_cpu = statistics.median(r["cpu"] for r in runs)
        s_rss = max(r["rss_mb"] for r in runs)
        f_wall = statistics.median(r["wall"] for r in floor)
        raw["small"] = {"bytes": small.stat().st_size, "runs": runs, "python_floor": floor}

        big = Path(tmp) / "PES_GROS.xml"
        t0 = time.perf_counter()
        size = generate_pes_file(big, args.mb * MB, siret=coll.siret, idpost=coll.helios.idpost,
                                 codcol=coll.helios.codcol, codbud=coll.helios.codbud, pieces_per_bordereau=50,
                                 lines_per_piece=2)
        gen_s = time.perf_counter() - t0
        size_mb = size / MB
        demat_big = measure([*demat_cmd(), "validate", str(big)])
        xsd = OFFICIAL_PES.resolve() if OFFICIAL_PES.is_file() else ROOT / "schemas" / "pes" / "PES_Aller.xsd"
        xmllint = shutil.which("xmllint")
        base = measure([xmllint, "--noout", "--stream", "--schema", str(xsd), str(big)]) if xmllint else None
        raw["big"] = {"bytes": size, "generate_s": gen_s, "demat": demat_big, "xmllint": base, "schema": str(xsd),
                      "official_schema": xsd == OFFICIAL_PES.resolve()}
        if demat_big["rc"] != 0:
            print(f"demat validate du gros PES : code {demat_big['rc']} (attendu 0)", file=sys.stderr)
            ok = False
    raw["load_end"] = load()

    speed = size_mb / demat_big["wall"]
    base_speed = size_mb / base["wall"] if base else None
    ratio = speed / base_speed if base_speed else None
    print(f"Petit PES ({raw['small']['bytes']} octets), {args.runs} exécutions, charge {raw['load_start']} :")
    print(f"  demat validate : {s_wall:.3f} s (mur, médiane), {s_cpu:.3f} s CPU, RSS max {s_rss:.0f} Mio")
    print(f"  python -c pass : {f_wall:.3f} s (plancher de l'interpréteur)")
    print(f"  objectifs : < {SMALL_WALL_TARGET_S} s : {'ATTEINT' if s_wall < SMALL_WALL_TARGET_S else 'NON ATTEINT'} ; "
          f"< {SMALL_RSS_TARGET_MB} Mo : {'ATTEINT' if s_rss < SMALL_RSS_TARGET_MB else 'NON ATTEINT'}")
    print(f"PES de {size_mb:.0f} Mo (généré en {gen_s:.1f} s) :")
    print(f"  demat validate : {demat_big['wall']:.1f} s, {speed:.1f} Mo/s, RSS max {demat_big['rss_mb']:.0f} Mio")
    if base:
        print(f"  xmllint --stream --schema ({'officiel' if raw['big']['official_schema'] else 'projet'}) : "
              f"{base['wall']:.1f} s, {base_speed:.1f} Mo/s, RSS max {base['rss_mb']:.0f} Mio")
        print(f"  en temps CPU : demat {demat_big['cpu']:.1f} s, xmllint {base['cpu']:.1f} s "
              f"(rapport des débits {base['cpu'] / demat_big['cpu']:.2f})")
        print(f"  rapport des débits demat/xmllint : {ratio:.2f} (objectif >= {SPEED_RATIO_TARGET} : "
              f"{'ATTEINT' if ratio >= SPEED_RATIO_TARGET else 'NON ATTEINT'})")
    else:
        print("  xmllint introuvable (paquet libxml2-utils) : pas de référence", file=sys.stderr)
    note = f"load {raw['load_start']}"
    print(figure("cli_small_pes_wall", s_wall, "s", SMALL_WALL_TARGET_S, note))
    print(figure("cli_small_pes_cpu", s_cpu, "s", None))
    print(figure("cli_small_pes_peak_rss", s_rss, "MiB", SMALL_RSS_TARGET_MB))
    print(figure("cli_python_floor_wall", f_wall, "s", None))
    print(figure("cli_big_pes_throughput_wall", speed, "MB/s", base_speed, note))
    print(figure("cli_big_pes_throughput_cpu", size_mb / demat_big["cpu"], "MB/s",
                 size_mb / base["cpu"] if base and base["cpu"] else None, "CPU time: less disturbed by a loaded machine"))
    print(figure("cli_big_pes_peak_rss", demat_big["rss_mb"], "MiB", base["rss_mb"] if base else None))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    raw["figures"] = {"small_wall_s": s_wall, "small_cpu_s": s_cpu, "small_rss_mib": s_rss, "python_floor_s": f_wall,
                      "big_mb": size_mb, "big_speed_mb_s": speed, "xmllint_speed_mb_s": base_speed,
                      "speed_ratio": ratio}
    out = results / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-bench_cli{'-' + TREE.name if TREE else ''}-raw.json"
    out.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"Chiffres bruts : {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
