"""Helpers shared by the platform and floor benchmarks (not a benchmark itself: no `bench_` prefix).

- the FIGURE line format the runner collects, and the median timing of a call;
- the benchmark documents: unique actes and PES for the demo collectivités;
- the SFTP simulators started in a temporary state (loopback only), as the platform does;
- process-tree CPU and memory accounting with psutil.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from embedded.demo import InboxFile  # noqa: E402

DEMO_CONFIG = ROOT / "flows" / "config" / "demo.yaml"
T = TypeVar("T")


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def figure(name: str, value: float | None, unit: str, baseline: float | None = None, *, note: str = "") -> str:
    """FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio[<TAB>note] (note: load average...)."""
    if value is None:
        return f"FIGURE\t{name}\tnan\t{unit}\t-\t-" + (f"\t{note}" if note else "")
    ratio = f"{value / baseline:.3f}" if baseline else "-"
    base = f"{baseline:.3f}" if baseline is not None else "-"
    line = f"FIGURE\t{name}\t{value:.3f}\t{unit}\t{base}\t{ratio}"
    return line + (f"\t{note}" if note else "")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    """Median wall time of `runs` calls (the median resists a noisy neighbour), and the last result."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


# --------------------------------------------------------------------------------------------- documents
@dataclass
class Doc(InboxFile):
    key: str  # numero (acte) or nomfic (PES)


def make_docs(n: int, stamp: str, *, mix: str = "mixed", config_path: Path = DEMO_CONFIG,
              pes_bordereaux: int = 2, acte_annexes: int = 1) -> list[Doc]:
    """n unique documents: actes and PES alternating over the demo collectivités (mix: mixed|actes|helios).

    Unique numero / nomfic per document (stamp + index), so no duplicate-number refusal."""
    from flows.actes.generate import generate_acte_zip
    from flows.config import load_config
    from flows.helios.generate import generate_pes

    config = load_config(config_path)
    colls = [c for c in config.collectivites]
    docs: list[Doc] = []
    for i in range(n):
        coll = colls[(i // 2) % len(colls)]
        flow = {"mixed": "actes" if i % 2 == 0 else "helios", "actes": "actes", "helios": "helios"}[mix]
        if flow == "helios" and not coll.helios:
            flow = "actes"
        if flow == "actes":
            numero = f"B{stamp[-8:]}{i:04d}"
            data = generate_acte_zip(collectivite=coll, numero=numero, nature="DE", matiere="5.2",
                                     objet=f"Délibération de banc d'essai {numero} : désignation des délégués",
                                     n_annexes=acte_annexes)
            docs.append(Doc(coll.slug, "actes", f"deliberation-{numero}.zip", data, numero))
        else:
            nomfic = f"PES_BENCH_{stamp}_{i:04d}"
            data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                codbud=coll.helios.codbud, nomfic=nomfic, n_bordereaux=pes_bordereaux,
                                seed=1000 + i)
            docs.append(Doc(coll.slug, "helios", f"{nomfic}.xml", data, nomfic))
    return docs


def automatic_config(target: Path) -> Path:
    """The demo configuration with every circuit automatic: one AUTO step naming the circuit's signer
    (signed with that official's certificate, nobody answers). The issue's benchmark circuit, used by
    bench_platform, bench_history, bench_celery and the floor alike."""
    import yaml

    data = yaml.safe_load(DEMO_CONFIG.read_text())
    for coll in data["collectivites"]:
        for doc_type, steps in coll.get("circuits", {}).items():
            signer = next((s["official"] for s in steps if s["kind"] == "SIGNATURE"), None)
            coll["circuits"][doc_type] = [{"kind": "AUTO", **({"official": signer} if signer else {})}]
    target.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return target


INBOX_SETTINGS = ("DEMAT_INBOX_EVENTS", "DEMAT_INBOX_MIN_AGE", "DEMAT_INBOX_SAFETY_AGE", "DEMAT_INBOX_POLL")


def settings_note(env: dict[str, str] | None = None) -> str:
    """The inbox settings a platform benchmark ran with (its environment over ours), for its figures'
    notes: the platform's defaults said as such, anything else named."""
    from flows.settings import Settings

    seen = {**os.environ, **(env or {})}
    changed = [f"{n}={seen[n]}" for n in INBOX_SETTINGS if seen.get(n)]
    d = Settings.__dataclass_fields__
    return ("inbox at NON-DEFAULT settings " + ", ".join(changed)) if changed else (
        f"inbox at default settings (events auto, min age {d['inbox_min_age'].default:g} s)")


# --------------------------------------------------------------------------------------------- simulators
class SimulatorProcess:
    """`python -m simulators` in a temporary state, answering at once (delay 0), loopback only."""

    def __init__(self, state: Path, *, delay: float = 0.0, later_delay: float = 0.0, config: Path = DEMO_CONFIG,
                 extra_args: tuple[str, ...] = ()):
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.args = [sys.executable, "-m", "simulators", "--state", str(self.state), "--config", str(config),
                     "--host", "127.0.0.1", "--delay", str(delay), "--later-delay", str(later_delay), *extra_args]

    def __enter__(self) -> SimulatorProcess:
        endpoints = self.state / "simulators" / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        logf = (self.state / "simulators.log").open("ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not endpoints.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"simulators did not start: see {self.state / 'simulators.log'}")
            time.sleep(0.2)
        raw = json.loads(endpoints.read_text())
        self.endpoints = raw.get("counterparts", raw)
        return self

    def endpoint(self, counterpart: str):
        from flows.transport.sftp import SftpEndpoint

        ep = self.endpoints[counterpart]
        assert ep["host"] == "127.0.0.1"
        return SftpEndpoint(host=ep["host"], port=ep["port"], username=ep["username"], key_path=ep["key_path"],
                            host_key=ep["host_key"])

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------------------------- accounting
def component_of(cmd: str) -> str:
    if "postgres" in cmd and ("pginstall" in cmd or cmd.startswith("postgres:")):
        return "postgres"
    if "-m simulators" in cmd:
        return "simulators"
    if "clamd" in cmd.split(" ", 1)[0]:
        return "antivirus"
    if "embedded run" in cmd:
        return "launcher"
    if "LocalExecutor" in cmd or cmd.startswith("airflow worker --"):
        return "tasks"  # executor worker (task supervisor) + the forked task processes
    if "api_server" in cmd or "api-server" in cmd:
        return "api-server"
    if "dag-processor" in cmd or "dag_processor" in cmd:
        return "dag-processor"
    if "triggerer" in cmd:
        return "triggerer"
    if "scheduler" in cmd or "serve-logs" in cmd:
        return "scheduler"
    if "standalone" in cmd:
        return "standalone"
    return "other"


def _pss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class TreeMeter:
    """CPU (self + reaped children) and memory of process trees, by component.

    CPU at a sample = sum over the live processes of (utime+stime + children utime+stime): a process
    that exits is counted in its parent's children times once reaped, so a difference between two
    samples is the CPU the trees used in between (the roots must stay alive)."""

    def __init__(self, roots_fn):
        self.roots_fn = roots_fn  # -> list of root pids (the launcher, the postmaster)
        self._procs: dict[int, tuple[psutil.Process, str]] = {}

    def processes(self) -> list[tuple[psutil.Process, str]]:
        out = []
        seen = set()
        for pid in self.roots_fn():
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in family:
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                cached = self._procs.get(p.pid)
                if cached is None or cached[0].create_time() != p.create_time():
                    try:
                        comp = component_of(" ".join(p.cmdline()))
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        continue
                    cached = (p, comp)
                    self._procs[p.pid] = cached
                out.append(cached)
        return out

    def sample(self, *, memory: bool = False) -> dict:
        cpu: dict[str, float] = {}
        rss = pss = 0
        n = 0
        for p, comp in self.processes():
            try:
                t = p.cpu_times()
                cpu[comp] = cpu.get(comp, 0.0) + t.user + t.system + t.children_user + t.children_system
                if memory:
                    rss += p.memory_info().rss
                    k = _pss_kib(p.pid)
                    pss += (k * 1024) if k is not None else 0
                n += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return {"t": time.monotonic(), "cpu": cpu, "rss": rss, "pss": pss, "n": n}


def cpu_delta(a: dict, b: dict) -> dict[str, float]:
    comps = set(a["cpu"]) | set(b["cpu"])
    return {c: b["cpu"].get(c, 0.0) - a["cpu"].get(c, 0.0) for c in sorted(comps)}
