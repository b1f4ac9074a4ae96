"""`python -m bench` (`make bench`): run every bench/bench_*.py, print one table, update bench/RESULTS.md.

    .venv/bin/python -m bench [--quick] [--only NAME ...] [--skip NAME ...] [--no-write]
    .venv/bin/python -m bench --only NAME --args "--batch 500 ..."   (one benchmark, its own arguments;
        a single word is written --args=--quick)

Each benchmark runs as a subprocess with its default sizes (`--quick`: smaller sizes, so the whole
run fits in about 15 minutes) and a time-out; its FIGURE lines
(FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio[<TAB>note]) are collected. A benchmark
that fails or times out is shown as failed in the table, with the figures it printed before.
RESULTS.md: the new run is inserted after the `<!-- bench:runs -->` marker (text above it, written
by hand, and older runs below it are kept), with the date, the commit, the machine and the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
RAW = BENCH / "results"  # one JSON per benchmark run: the raw figures RESULTS.md cites
MARKER = "<!-- bench:runs -->"

# sizes: default sizes are each benchmark's own; --quick passes these
QUICK_ARGS: dict[str, list[str]] = {
    "bench_pes_validate": ["50"],
    "bench_tiers_gate": ["100000"],
    "bench_sign": ["--bordereaux", "50", "--baseline-samples", "20", "--repeat", "3"],
    "bench_seda_package": ["--mb", "20", "--runs", "1"],
    "bench_floor": ["--dossiers", "10"],
    "bench_platform": ["--quick"],
    "bench_history": ["--quick", "--max-minutes", "25"],
    "bench_celery": ["--dossiers", "8"],
    "bench_cli": ["--mb", "20", "--runs", "3"],
}
TIMEOUT_S = {"bench_platform": 3900, "bench_history": 3900, "bench_celery": 3900}  # full sizes; others 1800
QUICK_TIMEOUT_S = {"bench_platform": 1380, "bench_history": 1560, "bench_celery": 1500}  # others 300
ORDER = ["bench_pes_validate", "bench_tiers_gate", "bench_cli", "bench_sign", "bench_seda_package", "bench_floor",
         "bench_platform", "bench_history", "bench_celery"]  # the platform last: its figures are the ones most disturbed by a loaded machine


@dataclass
class Outcome:
    name: str
    rc: int | None
    seconds: float
    load_start: str
    figures: list[list[str]] = field(default_factory=list)
    tail: str = ""

    @property
    def status(self) -> str:
        if self.rc is None:
            return "TIME-OUT"
        return "ok" if self.rc == 0 else f"FAILED rc={self.rc}"


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    info = {"nproc": str(len(os.sched_getaffinity(0))), "python": platform.python_version(),
            "kernel": platform.release()}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" (uncommitted changes in the tree)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def discover() -> list[str]:
    found = sorted(p.stem for p in BENCH.glob("bench_*.py"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def bench_args(name: str, quick: bool, override: list[str] | None) -> list[str]:
    if override is not None:
        return override
    return QUICK_ARGS.get(name, []) if quick else []


def run_one(name: str, quick: bool, logdir: Path, override: list[str] | None = None) -> Outcome:
    args = bench_args(name, quick, override)
    timeout = (QUICK_TIMEOUT_S if quick else TIMEOUT_S).get(name, 300 if quick else 1800)
    cmd = [sys.executable, str(BENCH / f"{name}.py"), *args]
    load = loadavg()
    print(f"[bench] {name} {' '.join(args)} (time-out {timeout} s, load {load})", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    out_path, err_path = logdir / f"{name}.out", logdir / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            import signal

            os.killpg(proc.pid, signal.SIGTERM)  # bench_platform stops its platform on SIGTERM
            try:
                proc.wait(150)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            rc = None
    seconds = time.monotonic() - t0
    text = out_path.read_text(errors="replace")
    figures = [line.split("\t")[1:] for line in text.splitlines() if line.startswith("FIGURE\t")]
    tail = ""
    if rc != 0:
        tail = "\n".join((err_path.read_text(errors="replace").strip().splitlines() or [""])[-15:])
    o = Outcome(name, rc, seconds, load, figures, tail)
    print(f"[bench] {name}: {o.status} in {seconds:.0f} s, {len(figures)} figure(s)", file=sys.stderr, flush=True)
    return o


def record_raw(o: Outcome, quick: bool, started: datetime, info: dict, args: list[str]) -> Path:
    """bench/results/<date>-<name>.json: every figure of one run, with commit, machine and load."""
    import json

    RAW.mkdir(exist_ok=True)
    path = RAW / f"{started:%Y%m%d-%H%M%S}-{o.name}.json"
    keys = ["name", "value", "unit", "baseline", "ratio", "note"]
    path.write_text(json.dumps({
        "benchmark": o.name, "started": started.isoformat(), "sizes": ("custom" if args != bench_args(o.name, quick, None) else "quick" if quick else "full"),
        "args": args, "status": o.status, "seconds": round(o.seconds, 1), "commit": git_head(),
        "machine": info, "load_at_start": o.load_start, "load_at_end": loadavg(),
        "figures": [dict(zip(keys, (f + ["-"] * 6)[:6], strict=True)) for f in o.figures],
    }, indent=1, ensure_ascii=False) + "\n")
    return path


def rows_of(outcomes: list[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        if not o.figures:
            rows.append(["(no figure)", "-", "-", "-", "-", o.name, o.status, o.load_start])
        for f in o.figures:
            f = (f + ["-"] * 6)[:6]
            name, value, unit, base, ratio, note = f
            load = note if note and note != "-" else f"load {o.load_start}"
            rows.append([name, value, unit, base, ratio, o.name, o.status, load])
    return rows


HEAD = ["figure", "value", "unit", "baseline", "ratio", "bench", "status", "conditions (load avg 1/5/15 min)"]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEAD, *rows]) for i in range(len(HEAD) - 1)]
    lines = []
    for r in [HEAD, *rows]:
        lines.append("  ".join(c.ljust(w) if i == 0 or i >= 5 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r[:-1], widths, strict=True))) + "  " + r[-1])
    return "\n".join(lines)


def md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEAD) + " |", "|" + "|".join(["---"] * len(HEAD)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return "\n".join(out)


def write_results(outcomes: list[Outcome], quick: bool, started: datetime, load0: str, info: dict,
                  override: list[str] | None = None) -> None:
    rows = rows_of(outcomes)
    sizes = f"sizes `{' '.join(override)}`" if override is not None else f"{'quick' if quick else 'full'} sizes"
    block = [
        f"## Run of {started:%Y-%m-%d %H:%M} UTC ({sizes})",
        "",
        f"- commit: `{git_head()}`",
        f"- machine: {info.get('nproc')} CPU(s) available, {info.get('memory', '?')}, {info.get('cpu', '?')}, "
        f"Linux {info.get('kernel')}, Python {info.get('python')}",
        f"- load average at start (1/5/15 min): {load0}; the machine is shared with other sessions",
        "- benchmarks: " + ", ".join(f"{o.name} {o.status} ({o.seconds:.0f} s)" for o in outcomes),
        f"- raw figures: `bench/results/{started:%Y%m%d-%H%M%S}-<benchmark>.json`",
        "",
        md_table(rows),
        "",
    ]
    for o in outcomes:
        if o.status != "ok" and o.tail:
            block += [f"<details><summary>{o.name}: {o.status}</summary>", "", "```", o.tail, "```", "",
                      "</details>", ""]
    new = "\n".join(block)
    if RESULTS.exists():
        text = RESULTS.read_text()
    else:
        text = "# Benchmark results\n\n`python -m bench` (`make bench`) inserts each run below.\n\n" + MARKER + "\n"
    if MARKER not in text:
        text = text.rstrip() + "\n\n" + MARKER + "\n"
    head, _, tail = text.partition(MARKER)
    RESULTS.write_text(head + MARKER + "\n\n" + new + "\n" + tail.lstrip("\n"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: the whole run in about 15 minutes")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names (bench_xxx or xxx)")
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--args", help="the arguments of the one benchmark named by --only (recorded in its raw JSON)")
    args = ap.parse_args(argv)
    override = None
    if args.args is not None:
        import shlex

        if not args.only or len(args.only) != 1:
            ap.error("--args needs exactly one benchmark named by --only")
        override = shlex.split(args.args)

    def norm(n: str) -> str:
        return n if n.startswith("bench_") else f"bench_{n}"

    names = discover()
    if args.only:
        names = [n for n in names if n in {norm(x) for x in args.only}]
    names = [n for n in names if n not in {norm(x) for x in args.skip}]
    started = datetime.now(UTC)
    load0 = loadavg()
    info = machine()
    logdir = Path(os.environ.get("BENCH_LOGDIR", "/tmp")) / f"demat-bench-{started:%Y%m%d-%H%M%S}"
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"[bench] {len(names)} benchmark(s), {'quick' if args.quick else 'full'} sizes; logs in {logdir}; "
          f"load {load0}; {info}", file=sys.stderr, flush=True)
    outcomes = []
    for n in names:
        o = run_one(n, args.quick, logdir, override)
        outcomes.append(o)
        if not args.no_write:
            raw = record_raw(o, args.quick, started, info, bench_args(n, args.quick, override))
            print(f"[bench] raw figures: {raw.relative_to(ROOT)}", file=sys.stderr, flush=True)
    print()
    print(text_table(rows_of(outcomes)))
    for o in outcomes:
        if o.status != "ok":
            print(f"\n{o.name}: {o.status}\n{o.tail}")
    if not args.no_write:
        write_results(outcomes, args.quick, started, load0, info, override)
        print(f"\n[bench] {RESULTS.relative_to(ROOT)} updated", file=sys.stderr)
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
