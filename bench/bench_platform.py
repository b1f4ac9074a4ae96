"""Platform benchmarks: reaction, end to end without humans, throughput, CPU and memory, vs the floor.

    .venv/bin/python bench/bench_platform.py [--quick] [--reaction 100] [--spacing 2.5] [--e2e 5]
        [--batch 500] [--approval auto|human] [--settle 10] [--sim-delay 0] [--inflight N] [--no-floor]
        [--attach STATE --port PORT]

By default the circuits are automatic (one AUTO step naming the circuit's signer: signed with that
official's certificate, nobody answers; the issue's benchmark circuit) and the simulators answer at
once (--sim-delay 0). `--approval human` keeps the demo circuits and answers them through the REST
API; `--inflight N` (human approval) drops N dossiers at once and leaves them at the parapheur.

Starts its own platform (`python -m embedded run`) in a temporary state folder on a free loopback
port, with the demo configuration AT THE PLATFORM'S DEFAULT INBOX SETTINGS (inotify where the
filesystem gives events, 2 s stability wait otherwise), and stops it with SIGINT at the end (SIGKILL
after 120 s). `--inbox-min-age S` (or DEMAT_INBOX_* in the environment) changes them: the reaction
and e2e figures are then renamed `..._nondefault_inbox` and their note says which setting.
`--attach` uses a running platform instead (development only).

Phases (documents from flows.helios.generate / flows.actes.generate, unique numero / nomfic):
  idle      the platform's background CPU per second before any drop (scheduler loops, the
            collection DAG every DEMAT_COLLECT_SECONDS, ...);
  reaction  N drops (os.replace into the inbox) one every --spacing seconds: drop -> "Reçu"
            (journal), drop -> run queued, drop -> run start_date, drop -> first task start;
  e2e       K actes and K PES, spaced (with --approval human, the parapheur answered by an approver:
            simulators.signer, the official's own account, after --settle seconds): drop ->
            "transmis" and drop -> "archivé", with the journal's breakdown by state;
  batch     B mixed dossiers dropped at once: dossiers/hour to "archivé" (and to "transmis"),
            CPU-seconds per dossier of the platform's processes (psutil, by component), peak RSS
            and PSS (sum, sampled every second), task instances run per dossier (Airflow's DB);
  floor     the same B documents through bench_floor's pipeline floor after the platform is stopped:
            the platform's own steps (same circuit, PostgreSQL, store, journal, signatures, answers
            collected, SEDA deposits) without Airflow. Its throughput to "archivé" is the baseline
            of the throughput figures; platform CPU − floor CPU is named "orchestration" (Airflow's
            own cost). Throughput counts only what reached the state, out of what was dropped
            (`batch_not_archived` says how many did not). CPU per dossier is written by component
            for both (`batch_cpu_per_dossier_<component>`, `floor_cpu_per_dossier_<component>`).
The counterpart simulators are the platform's own, answering after --sim-delay seconds (`make run`
defaults: first answer after 2 s, SAE reply after 30 s); the collection DAG's period (20 s) is inside
the archived figures.
Run start dates and task instances are read from Airflow's metadata database (the values the REST
API serves: checked against /api/v2/dags/{dag}/dagRuns/{run_id} for a sample); the approver uses
the REST API. Everything is bounded by time-outs (--max-minutes overall).
Prints a table, then FIGURE lines.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    Doc,
    TreeMeter,
    automatic_config,
    cpu_delta,
    figure,
    loadavg,
    log,
    make_docs,
    settings_note,
)

from embedded.demo import stop_launcher  # noqa: E402

FINAL = {"archive", "refuse_validation", "rejete_parapheur", "parapheur_expire", "refuse_etat", "refuse_sae",
         "annule", "erreur"}
ORDER = ["recu", "valide", "au_parapheur", "signe", "transmis", "acquitte", "depose_sae", "archive"]


class Deadline(Exception):
    pass


class SkipBatch(Exception):
    pass


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))  # nearest rank
    return s[k]


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------- platform
class Platform:
    def __init__(self, state: Path, port: int, proc: subprocess.Popen | None):
        self.state, self.port, self.proc = state, port, proc
        from embedded.postgres import EmbeddedPostgres

        pg = EmbeddedPostgres(state / "postgres", port=int((state / "postgres.port").read_text()))
        self.demat_url, self.airflow_url = pg.url("demat"), pg.url("airflow")
        from sqlalchemy import create_engine

        self.demat_db = create_engine(self.demat_url, pool_size=2)
        self.airflow_db = create_engine(self.airflow_url, pool_size=2)
        self.secrets = json.loads((state / "secrets.json").read_text())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launcher_pid(self) -> int:
        if self.proc is not None:
            return self.proc.pid
        return json.loads((self.state / "run.json").read_text())["pid"]

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def roots(self) -> list[int]:
        return [p for p in (self.launcher_pid(), self.postmaster_pid()) if p]

    @staticmethod
    def start(state: Path, env_extra: dict[str, str], timeout: float = 900, config: Path | None = None) -> Platform:
        from embedded.postgres import free_port

        port = free_port()
        env = {**os.environ, "DEMAT_STATE": str(state), **env_extra}
        logf = (state / "launcher.log").open("ab")
        cmd = [sys.executable, "-m", "embedded", "run", "--state", str(state), "--port", str(port)]
        proc = subprocess.Popen(cmd + (["--config", str(config)] if config else []),
                                cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not (state / "ready").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (state / "launcher.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the platform did not become ready in {timeout:g} s:\n{tail}")
                time.sleep(1)
            return Platform(state, port, proc)
        except BaseException:  # a time-out or a signal while starting: stop what we started
            stop_launcher(proc, grace=120)
            raise

    def stop(self) -> None:
        self.demat_db.dispose()
        self.airflow_db.dispose()
        stop_launcher(self.proc, grace=120)

    # -- reads -----------------------------------------------------------------------------------
    def dossiers(self, shas: list[str]) -> dict[str, dict]:
        """sha -> {id, state, flow, times: {state: first time reached (epoch)}}."""
        from sqlalchemy import text

        if not shas:
            return {}
        out: dict[str, dict] = {}
        with self.demat_db.connect() as c:
            rows = c.execute(text("SELECT id, sha256, state, flow FROM dossier WHERE sha256 = ANY(:s)"),
                             {"s": list(shas)}).all()
            ids = [r[0] for r in rows]
            times: dict[str, dict[str, float]] = {i: {} for i in ids}
            if ids:
                for did, st, at in c.execute(text(
                        "SELECT dossier_id, state_to, min(at) FROM journal WHERE dossier_id = ANY(:i) "
                        "AND state_to IS NOT NULL GROUP BY dossier_id, state_to"), {"i": ids}):
                    times[did][st] = at.timestamp()
        for did, sha, st, flow in rows:
            out[sha] = {"id": did, "state": st, "flow": flow, "times": times.get(did, {})}
        return out

    def runs(self, run_ids: list[str]) -> dict[str, dict]:
        """run_id -> {queued, start, end, state, first_ti_start} from Airflow's metadata database."""
        from sqlalchemy import text

        if not run_ids:
            return {}
        out: dict[str, dict] = {}
        with self.airflow_db.connect() as c:
            for rid, dag, q, s, e, st in c.execute(text(
                    "SELECT run_id, dag_id, queued_at, start_date, end_date, state FROM dag_run "
                    "WHERE run_id = ANY(:r)"), {"r": list(run_ids)}):
                out[rid] = {"dag": dag, "queued": q.timestamp() if q else None, "start": s.timestamp() if s else None,
                            "end": e.timestamp() if e else None, "state": st, "first_ti_start": None}
            for rid, s in c.execute(text(
                    "SELECT run_id, min(start_date) FROM task_instance WHERE run_id = ANY(:r) GROUP BY run_id"),
                    {"r": list(run_ids)}):
                if rid in out and s is not None:
                    out[rid]["first_ti_start"] = s.timestamp()
        return out

    def task_stats(self, since: datetime) -> list[tuple]:
        """(dag, task, count, tries, mean duration s) of task instances started since."""
        from sqlalchemy import text

        with self.airflow_db.connect() as c:
            return [tuple(r) for r in c.execute(text(
                "SELECT dag_id, task_id, count(*), sum(try_number), avg(duration) FROM task_instance "
                "WHERE start_date >= :t GROUP BY dag_id, task_id ORDER BY dag_id, task_id"), {"t": since})]

    def api_run(self, dag: str, run_id: str) -> dict:
        from simulators.signer import AirflowClient

        client = AirflowClient(self.base_url, "admin", self.secrets["passwords"]["admin"])
        return client.get(f"/dags/{dag}/dagRuns/{run_id}")


# --------------------------------------------------------------------------------------------- helpers
class Approver(threading.Thread):
    """Answers every parapheur step as the assigned official (simulators.signer), after `settle` seconds."""

    def __init__(self, platform: Platform, settle: float, interval: float = 2.0):
        super().__init__(daemon=True, name="approver")
        from flows.config import load_config
        from simulators.signer import AirflowClient

        config = load_config(platform.state / "config.yaml")
        users = sorted({u for c in config.collectivites for o in c.officials for u in o.users})
        self.clients = [AirflowClient(platform.base_url, u, platform.secrets["passwords"][u]) for u in users]
        self.settle, self.interval = settle, interval
        self.stop_event = threading.Event()
        self.paused = threading.Event()  # set: nobody answers (dossiers stay at the parapheur)
        self.answered = 0
        self.errors: list[str] = []

    def run(self) -> None:
        from simulators.signer import APPROVE

        # The signer's own rule counts from the HITL request's created_at, which a retried try keeps:
        # the approver would then answer within a second of the new try parking (seen: the resumed
        # try fails, "finished with state success, but the task instance's state attribute is
        # queued"). So count from when this approver first saw that try parked.
        first_seen: dict[tuple, float] = {}
        while not self.stop_event.is_set():
            for client in ([] if self.paused.is_set() else self.clients):
                try:
                    for detail in client.pending_requests(settled_seconds=0):
                        ti = detail.get("task_instance") or {}
                        if ti.get("state") != "awaiting_input":
                            continue
                        key = (ti.get("dag_run_id"), ti.get("task_id"), ti.get("try_number"))
                        seen = first_seen.setdefault(key, time.monotonic())
                        if time.monotonic() - seen < self.settle:
                            continue
                        r = client.respond(detail, APPROVE, "")
                        if r.status_code in (200, 409):
                            self.answered += 1
                        else:
                            self.errors.append(f"{r.status_code} {r.text[:200]}")
                except Exception as exc:  # noqa: BLE001 - a transient API error must not stop the approver
                    self.errors.append(repr(exc)[:200])
            self.stop_event.wait(self.interval)


class Sampler(threading.Thread):
    def __init__(self, meter: TreeMeter, interval: float = 1.0):
        super().__init__(daemon=True, name="sampler")
        self.meter, self.interval = meter, interval
        self.samples: list[dict] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                s = self.meter.sample(memory=True)
                s["wall"] = time.time()
                self.samples.append(s)
            except Exception:  # noqa: BLE001
                pass
            self.stop_event.wait(self.interval)

    def now(self) -> dict:
        s = self.meter.sample(memory=False)
        s["wall"] = time.time()
        return s

    def peak(self, t0: float, t1: float) -> tuple[float, float]:
        window = [s for s in self.samples if t0 <= s["wall"] <= t1]
        if not window:
            return 0.0, 0.0
        return max(s["rss"] for s in window) / 2**20, max(s["pss"] for s in window) / 2**20


def wait_tracked(platform: Platform, docs: list[tuple[Doc, float]], until: set[str] | str, timeout: float,
                 label: str) -> dict[str, dict]:
    """Poll the demat DB until every doc's dossier is in a state of `until` (or final). sha -> info."""
    want = {until} if isinstance(until, str) else set(until)
    deadline = time.monotonic() + timeout
    shas = [d.sha256 for d, _ in docs]
    info: dict[str, dict] = {}
    last_log = 0.0
    while True:
        info = platform.dossiers(shas)
        done = [s for s in shas if s in info and (want & set(info[s]["times"]) or info[s]["state"] in FINAL)]
        if len(done) == len(shas):
            return info
        if time.monotonic() > deadline:
            log(f"{label}: time-out with {len(done)}/{len(shas)} done")
            return info
        if time.monotonic() - last_log > 30:
            states: dict[str, int] = {}
            for s in shas:
                st = info.get(s, {}).get("state", "non reçu")
                states[st] = states.get(st, 0) + 1
            log(f"{label}: {len(done)}/{len(shas)} ; {states} ; load {loadavg()}")
            last_log = time.monotonic()
        time.sleep(1.0)


def wait_quiet(platform: Platform, shas: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = platform.dossiers(shas)
        if all(info.get(s, {}).get("state") in FINAL for s in shas):
            return
        time.sleep(2)
    log("previous dossiers still running after the quiet time-out: carrying on")


# --------------------------------------------------------------------------------------------- phases
def phase_reaction(platform, docs: list[Doc], spacing: float, timeout: float) -> tuple[list[str], dict]:
    inbox = platform.state / "inbox"
    dropped: list[tuple[Doc, float]] = []
    load0 = loadavg()
    for i, d in enumerate(docs):
        target = time.monotonic() + spacing
        dropped.append((d, d.drop(inbox)))
        if i < len(docs) - 1:
            time.sleep(max(0.0, target - time.monotonic()))
    info = wait_tracked(platform, dropped, "recu", timeout, "reaction")
    # wait for the runs to start (bounded: the figures say n=k/N when some never started)
    deadline = time.monotonic() + timeout / 2
    last_log = time.monotonic()
    while True:
        run_ids = [f"dossier__{info[d.sha256]['id']}" for d, _ in dropped if d.sha256 in info]
        runs = platform.runs(run_ids)
        if (all(r.get("first_ti_start") for r in runs.values()) and len(runs) == len(dropped)) \
                or time.monotonic() > deadline:
            break
        if time.monotonic() - last_log > 30:
            log(f"reaction: {sum(1 for r in runs.values() if r.get('first_ti_start'))}/{len(dropped)} runs started")
            last_log = time.monotonic()
        time.sleep(1)
    recu, queued, start, first_ti = [], [], [], []
    for d, t in dropped:
        x = info.get(d.sha256)
        if not x:
            continue
        if "recu" in x["times"]:
            recu.append(x["times"]["recu"] - t)
        r = runs.get(f"dossier__{x['id']}")
        if r:
            if r["queued"]:
                queued.append(r["queued"] - t)
            if r["start"]:
                start.append(r["start"] - t)
            if r["first_ti_start"]:
                first_ti.append(r["first_ti_start"] - t)
    # cross-check a sample with the REST API (the value the issue names)
    checked = []
    for d, _t in dropped[:3]:
        x = info.get(d.sha256)
        if not x:
            continue
        rid = f"dossier__{x['id']}"
        try:
            api = platform.api_run(runs[rid]["dag"], rid)
            api_start = datetime.fromisoformat(api["start_date"].replace("Z", "+00:00")).timestamp()
            checked.append(abs(api_start - runs[rid]["start"]))
        except Exception as exc:  # noqa: BLE001
            log(f"REST cross-check failed: {exc!r}")
    note = f"n={len(start)}/{len(docs)}, every {spacing:g}s; load {load0} -> {loadavg()}"
    res = {"recu": recu, "queued": queued, "start": start, "first_ti": first_ti, "note": note,
           "api_check_max_diff": max(checked) if checked else None}
    return [d.sha256 for d in docs], res


def breakdown(info: dict) -> dict[str, float]:
    t = info["times"]
    out = {}
    for a, b in zip(ORDER, ORDER[1:], strict=False):
        if a in t and b in t:
            out[f"{a}->{b}"] = t[b] - t[a]
    return out


def phase_e2e(platform, docs: list[Doc], spacing: float, timeout: float) -> dict:
    inbox = platform.state / "inbox"
    dropped = []
    load0 = loadavg()
    for d in docs:
        dropped.append((d, d.drop(inbox)))
        time.sleep(spacing)
    info = wait_tracked(platform, dropped, "archive", timeout, "e2e")
    res: dict[str, dict] = {}
    for d, t in dropped:
        x = info.get(d.sha256)
        r = res.setdefault(d.flow, {"transmis": [], "archive": [], "steps": {}, "states": []})
        if not x:
            r["states"].append("non reçu")
            continue
        r["states"].append(x["state"])
        if "transmis" in x["times"]:
            r["transmis"].append(x["times"]["transmis"] - t)
        if "archive" in x["times"]:
            r["archive"].append(x["times"]["archive"] - t)
        if "recu" in x["times"]:
            r["steps"].setdefault("drop->recu", []).append(x["times"]["recu"] - t)
        for k, v in breakdown(x).items():
            r["steps"].setdefault(k, []).append(v)
    res["_note"] = f"load {load0} -> {loadavg()}"
    return res


def _drop_and_track(platform, sampler: Sampler, docs: list[Doc], until: str, timeout: float, label: str) -> dict:
    """Drop every document at once, wait until each reached `until` (or a final state): what both
    the batch and the in-flight phases measure (times, CPU, peak memory, states)."""
    load0 = loadavg()
    c0 = sampler.now()
    dropped = [(d, d.drop(platform.state / "inbox")) for d in docs]
    t0 = dropped[0][1]
    info = wait_tracked(platform, dropped, until, timeout, label)
    c1 = sampler.now()
    t_end = time.time()
    states: dict[str, int] = {}
    for d, _ in dropped:
        st = info.get(d.sha256, {}).get("state", "non reçu")
        states[st] = states.get(st, 0) + 1
    times = [info[d.sha256]["times"] for d, _ in dropped if d.sha256 in info]
    return {"times": times, "t0": t0, "t_end": t_end, "c0": c0, "c1": c1, "states": states,
            "peak": sampler.peak(t0, t_end), "load0": load0}


def phase_batch(platform, sampler: Sampler, docs: list[Doc], timeout: float) -> dict:
    since = datetime.now(UTC)
    r = _drop_and_track(platform, sampler, docs, "archive", timeout, "batch")
    t0, times = r["t0"], r["times"]
    archived = [t["archive"] for t in times if "archive" in t]
    transmitted = [t["transmis"] for t in times if "transmis" in t]
    acked = [t["acquitte"] for t in times if "acquitte" in t]
    waits = [t["archive"] - t["depose_sae"] for t in times if {"archive", "depose_sae"} <= set(t)]
    n = len(docs)
    rss, pss = r["peak"]
    return {
        "n": n, "states": r["states"], "t0": t0, "wall": r["t_end"] - t0,
        "archived": len(archived), "transmitted": len(transmitted), "acquitted": len(acked),
        "span_archive": (max(archived) - t0) if archived else None,
        "span_transmis": (max(transmitted) - t0) if transmitted else None,
        "span_acquitte": (max(acked) - t0) if acked else None,
        "sae_wait_median": med(waits),
        "cpu": cpu_delta(r["c0"], r["c1"]), "cpu_window": r["c1"]["t"] - r["c0"]["t"],
        "peak_rss_mib": rss, "peak_pss_mib": pss, "tasks": platform.task_stats(since),
        "note": f"n={n}; load {r['load0']} -> {loadavg()}",
    }


def phase_inflight(platform, sampler: Sampler, docs: list[Doc], timeout: float) -> dict:
    """N dossiers dropped at once and left waiting at the parapheur: memory while carrying them."""
    r = _drop_and_track(platform, sampler, docs, "au_parapheur", timeout, "in flight")
    parked = [t["au_parapheur"] for t in r["times"] if "au_parapheur" in t]
    cpu = sum(v for k, v in cpu_delta(r["c0"], r["c1"]).items() if k != "simulators")
    rss, pss = r["peak"]
    return {"n": len(docs), "parked": len(parked), "span": (max(parked) - r["t0"]) if parked else None,
            "rss": rss, "pss": pss, "cpu_per_dossier": cpu / len(docs), "states": r["states"],
            "note": f"n={len(parked)}/{len(docs)} at the parapheur; load {r['load0']} -> {loadavg()}"}


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (reaction 20, e2e 2, batch 20)")
    ap.add_argument("--reaction", type=int)
    ap.add_argument("--reaction-mix", choices=("mixed", "actes", "helios"), default="actes")
    ap.add_argument("--spacing", type=float, default=2.5)
    ap.add_argument("--e2e", type=int, help="dossiers per flow")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--approval", choices=("auto", "human"), default="auto",
                    help="auto: circuits of one AUTO step (the issue's benchmark circuit); human: the demo "
                         "circuits answered through the REST API by an approver thread")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds the human approver lets a request settle")
    ap.add_argument("--sim-delay", type=float, default=0.0,
                    help="the simulators' answer delays (0: answering at once; the platform's default is 2 s/30 s)")
    ap.add_argument("--idle", type=float, help="seconds of idle measurement")
    ap.add_argument("--collect-seconds", type=int, help="DEMAT_COLLECT_SECONDS for the platform (default: its own)")
    ap.add_argument("--inbox-min-age", type=float,
                    help="DEMAT_INBOX_MIN_AGE for the platform (default: the platform's own; a value renames the "
                         "reaction and e2e figures ..._nondefault_inbox)")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--attach", type=Path, help="use the running platform of this state folder (development)")
    ap.add_argument("--port", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--inflight", type=int, default=0,
                    help="after the batch: N dossiers dropped at once and left at the parapheur (memory)")
    ap.add_argument("--keep-state", action="store_true")
    args = ap.parse_args(argv)
    q = args.quick
    n_react = args.reaction if args.reaction is not None else (20 if q else 100)
    n_e2e = args.e2e if args.e2e is not None else (2 if q else 5)
    # 500: a sustained figure (with 60 the last collection passes weigh on the hour rate)
    n_batch = args.batch if args.batch is not None else (20 if q else 500)
    idle_s = args.idle if args.idle is not None else (20 if q else 60)
    max_minutes = args.max_minutes or (20 if q else 60)

    def on_alarm(signum, frame):
        raise Deadline(f"bench_platform: overall time-out of {max_minutes:g} min")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(max_minutes * 60))
    def on_term(signum, frame):
        raise Deadline("bench_platform: SIGTERM")

    signal.signal(signal.SIGTERM, on_term)

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    log(f"documents: reaction {n_react} ({args.reaction_mix}), e2e {n_e2e}+{n_e2e}, batch {n_batch} (mixed)")
    react_docs = make_docs(n_react, stamp + "1", mix=args.reaction_mix)
    e2e_docs = [x for pair in zip(make_docs(n_e2e, stamp + "2", mix="actes"),
                                  make_docs(n_e2e, stamp + "3", mix="helios"), strict=True) for x in pair]
    batch_docs = make_docs(n_batch, stamp + "4", mix="mixed")

    tmp = None
    platform = None
    sampler = approver = None
    lines: list[str] = []
    table: list[tuple[str, str]] = []
    rc = 0
    started = time.monotonic()
    printed = 0

    def flush_figures() -> None:  # a later time-out must not lose the figures of finished phases
        nonlocal printed
        for line in lines[printed:]:
            print(line, flush=True)
        printed = len(lines)
    load_start = loadavg()
    inbox_env = {"DEMAT_INBOX_MIN_AGE": f"{args.inbox_min_age:g}"} if args.inbox_min_age is not None else {}
    inbox_note = settings_note(inbox_env)
    # a figure measured away from the platform's defaults carries it in its name, not only in a note
    suffix = "_nondefault_inbox" if inbox_note.startswith("inbox at NON-DEFAULT") else ""
    config = None
    try:
        if args.attach:
            platform = Platform(args.attach.resolve(), args.port, None)
            startup = None
        else:
            tmp = Path(tempfile.mkdtemp(prefix="bench-platform-"))
            env = {"DEMAT_SIM_DELAY": f"{args.sim_delay:g}", "DEMAT_SIM_LATER_DELAY": f"{args.sim_delay:g}"}
            if args.inbox_min_age is not None:
                env["DEMAT_INBOX_MIN_AGE"] = f"{args.inbox_min_age:g}"
            if args.collect_seconds:
                env["DEMAT_COLLECT_SECONDS"] = str(args.collect_seconds)
            config = automatic_config(tmp / "bench-auto.yaml") if args.approval == "auto" else None  # the floor's too
            log(f"starting the platform in {tmp} (load {loadavg()}; approval {args.approval}, simulators' "
                f"delay {args.sim_delay:g} s)")
            t = time.monotonic()
            platform = Platform.start(tmp, env, config=config)
            startup = time.monotonic() - t
            log(f"platform ready in {startup:.0f} s on port {platform.port}")
            time.sleep(10)  # let the first scheduled runs (collect, watch) pass
        meter = TreeMeter(platform.roots)
        sampler = Sampler(meter)
        sampler.start()
        if args.approval == "human":
            approver = Approver(platform, args.settle)
            approver.start()

        # idle
        s0 = sampler.now()
        time.sleep(idle_s)
        s1 = sampler.now()
        idle = cpu_delta(s0, s1)
        idle_rate = {k: v / (s1["t"] - s0["t"]) for k, v in idle.items()}
        idle_total_rate = sum(v for k, v in idle_rate.items() if k != "simulators")
        lines.append(figure("platform_idle_cpu", idle_total_rate, "CPU-s/s", note=f"load {loadavg()}"))
        if startup is not None:
            lines.append(figure("platform_startup", startup, "s", note=f"load {load_start}"))
        flush_figures()

        # reaction
        log(f"reaction: {n_react} drops every {args.spacing:g} s")
        react_shas, r = phase_reaction(platform, react_docs, args.spacing, timeout=300 if q else 600)
        for key, name in (() if not react_docs else (
                ("start", "reaction_run_start"), ("recu", "reaction_recu"),
                ("queued", "reaction_run_queued"), ("first_ti", "reaction_first_task_start"))):
            lines.append(figure(f"{name}{suffix}_median", med(r[key]), "s", note=f"{inbox_note}; {r['note']}"))
            lines.append(figure(f"{name}{suffix}_p95", pct(r[key], 95), "s", note=f"{inbox_note}; {r['note']}"))
        flush_figures()
        if r["api_check_max_diff"] is not None:
            table.append(("REST API vs DB start_date (max diff)", f"{r['api_check_max_diff']:.3f} s"))

        # e2e
        wait_quiet(platform, react_shas, timeout=300)
        log(f"e2e: {n_e2e} actes + {n_e2e} PES, one every 10 s")
        e = phase_e2e(platform, e2e_docs, spacing=10.0, timeout=900 if not q else 360)
        for flow in ("actes", "helios"):
            x = e.get(flow)
            if not x:
                continue
            how = f"approver settle {args.settle:g}s" if approver else "automatic circuit"
            note = (f"n={len(x['transmis'])}/{n_e2e} states {sorted(set(x['states']))}; {how}; "
                    f"simulators' delay {args.sim_delay:g}s; {inbox_note}; {e['_note']}")
            lines.append(figure(f"e2e_{flow}_drop_to_transmis{suffix}_median", med(x["transmis"]), "s", note=note))
            lines.append(figure(f"e2e_{flow}_drop_to_archive{suffix}_median", med(x["archive"]), "s", note=note))
            for k, v in x["steps"].items():
                table.append((f"e2e {flow} {k} (median)", f"{med(v):.1f} s"))
        flush_figures()

        # in flight (human approval only: the dossiers wait at the parapheur, nobody answers)
        if args.inflight:
            if approver is None:
                raise SystemExit("--inflight needs --approval human (dossiers wait at the parapheur)")
            approver.paused.set()
            log(f"in flight: {args.inflight} dossiers dropped at once, left at the parapheur")
            f = phase_inflight(platform, sampler, make_docs(args.inflight, stamp + "5", mix="mixed"),
                               timeout=max(600.0, args.inflight * 1.5))
            table.append(("in flight final states", json.dumps(f["states"], ensure_ascii=False)))
            lines.append(figure("inflight_peak_rss_sum", f["rss"], "MiB", note=f["note"]))
            lines.append(figure("inflight_peak_pss_sum", f["pss"], "MiB", note=f["note"]))
            lines.append(figure("inflight_throughput_to_parapheur",
                                f["parked"] / f["span"] * 3600 if f["span"] else None, "dossiers/h", note=f["note"]))
            lines.append(figure("inflight_cpu_per_dossier_to_parapheur", f["cpu_per_dossier"], "CPU-s",
                                note=f["note"]))
            flush_figures()
            raise SkipBatch  # the parked dossiers would disturb a batch: one or the other per run

        # batch
        if not batch_docs:
            raise SkipBatch
        wait_quiet(platform, [d.sha256 for d in e2e_docs], timeout=300)
        log(f"batch: {n_batch} mixed dossiers at once")
        b = phase_batch(platform, sampler, batch_docs, timeout=(600 if q else 1800))
        b["note"] = f"{args.approval} approval, simulators' delay {args.sim_delay:g}s; {b['note']}"
        platform_cpu = {k: v for k, v in b["cpu"].items() if k != "simulators"}
        total_cpu = sum(platform_cpu.values())
        idle_part = idle_total_rate * b["cpu_window"]
        per_dossier = total_cpu / b["n"]
        per_dossier_net = (total_cpu - idle_part) / b["n"]
        thr_archive = b["archived"] / b["span_archive"] * 3600 if b["span_archive"] else None
        thr_transmis = b["transmitted"] / b["span_transmis"] * 3600 if b["span_transmis"] else None
        table.append(("batch final states", json.dumps(b["states"], ensure_ascii=False)))
        table.append(("batch wall (drop -> all final)", f"{b['wall']:.0f} s"))
        if b["sae_wait_median"] is not None:
            table.append(("batch median SAE wait depose_sae->archive (simulator's 30 s + collection)",
                          f"{b['sae_wait_median']:.0f} s"))
        for comp, v in sorted(b["cpu"].items(), key=lambda kv: -kv[1]):
            table.append((f"batch CPU {comp}", f"{v:.1f} s ({v / b['n']:.2f} s/dossier; idle rate "
                                               f"{idle_rate.get(comp, 0.0):.3f} s/s)"))
        n_ti = sum(row[2] for row in b["tasks"])
        for dag, task, count, tries, dur in b["tasks"]:
            table.append((f"tasks {dag}.{task}", f"{count} TIs, tries {tries}, mean {float(dur or 0):.1f} s"))
        table.append(("task instances per dossier (all DAGs, batch window)", f"{n_ti / b['n']:.1f}"))
        batch_lines = {
            "thr_archive": thr_archive, "thr_transmis": thr_transmis, "per_dossier": per_dossier,
            "per_dossier_net": per_dossier_net, "b": b, "n_ti": n_ti,
        }
    except SkipBatch:
        batch_lines = None
    except Deadline as exc:
        log(str(exc))
        rc = 2
        batch_lines = None
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        rc = 1
        batch_lines = None
    finally:
        signal.alarm(0)
        if approver:
            approver.stop_event.set()
        if sampler:
            sampler.stop_event.set()
        if platform is not None and not args.attach:
            log("stopping the platform (SIGINT)")
            platform.stop()
        elif platform is not None:
            platform.demat_db.dispose()
            platform.airflow_db.dispose()

    floor = None
    if batch_lines and not args.no_floor and args.approval != "auto":
        log("floor: not run with --approval human (the floor answers no parapheur: not the same work)")
    elif batch_lines and not args.no_floor:
        from bench_floor import run_floor

        log("floor: the batch's documents through the platform's steps without Airflow (pipeline floor)")
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as ftmp:
            floor = run_floor(batch_docs, Path(ftmp), config_path=config)
        floor["note"] = (f"pipeline floor (same steps, PostgreSQL, journal, answers; no Airflow), {floor['workers']} "
                         f"workers; n={floor['n']}, {floor['archived']} archived; load {floor['load']}")

    if batch_lines:
        b = batch_lines["b"]
        note = b["note"]
        fl_thr = floor["throughput_per_hour"] if floor else None
        note = f"{b['archived']}/{b['n']} archived, {b['n'] - b['archived']} not; {note}"
        lines.append(figure("batch_throughput_to_archive", batch_lines["thr_archive"], "dossiers/h", fl_thr,
                            note=note))
        lines.append(figure("batch_not_archived", b["n"] - b["archived"], "dossiers", note=note))
        lines.append(figure("batch_throughput_to_transmis", batch_lines["thr_transmis"], "dossiers/h", None,
                            note=f"{b['transmitted']}/{b['n']} transmitted; {note}"))
        fl_cpu = floor["cpu_per_dossier"] if floor else None
        lines.append(figure("batch_cpu_per_dossier", batch_lines["per_dossier"], "CPU-s", fl_cpu, note=note))
        lines.append(figure("batch_cpu_per_dossier_net_of_idle", batch_lines["per_dossier_net"], "CPU-s", fl_cpu,
                            note=note))
        for comp, v in sorted(b["cpu"].items()):  # the next step is chosen from these
            lines.append(figure(f"batch_cpu_per_dossier_{comp}", v / b["n"], "CPU-s", note=note))
        if floor:
            overhead = batch_lines["per_dossier"] - floor["cpu_per_dossier"]
            lines.append(figure("batch_orchestration_cpu_per_dossier", overhead, "CPU-s",
                                note="platform minus the pipeline floor (the same steps without Airflow): "
                                     "Airflow's own cost; " + note))
            lines.append(figure("batch_orchestration_share", 100 * overhead / batch_lines["per_dossier"], "%",
                                note=note))
            lines.append(figure("floor_throughput_to_archive_same_docs", floor["throughput_per_hour"], "dossiers/h",
                                note=floor["note"]))
            lines.append(figure("floor_not_archived", floor["not_archived"], "dossiers", note=floor["note"]))
            lines.append(figure("floor_cpu_per_dossier", floor["cpu_per_dossier"], "CPU-s", note=floor["note"]))
            for comp, v in sorted(floor["cpu_by_component"].items()):
                lines.append(figure(f"floor_cpu_per_dossier_{comp.replace(' ', '_')}", v, "CPU-s",
                                    note=floor["note"]))
            for step, v in floor["cpu_by_step"].items():
                lines.append(figure(f"floor_cpu_step_{step}", v, "CPU-s/dossier", note=floor["note"]))
        lines.append(figure("batch_task_instances_per_dossier", batch_lines["n_ti"] / b["n"], "TIs", note=note))
        lines.append(figure("batch_peak_rss_sum", b["peak_rss_mib"], "MiB", note=note))
        lines.append(figure("batch_peak_pss_sum", b["peak_pss_mib"], "MiB", note=note))
        if b["sae_wait_median"] is not None:
            lines.append(figure("batch_sae_wait_median", b["sae_wait_median"], "s", note=note))
        if b["span_acquitte"]:
            lines.append(figure("batch_throughput_to_acquitte", b["acquitted"] / b["span_acquitte"] * 3600,
                                "dossiers/h", None, note=f"{b['acquitted']}/{b['n']} acknowledged; {note}"))

    print(f"\nbench_platform ({time.monotonic() - started:.0f} s, load at start {load_start})")
    for k, v in table:
        print(f"  {k:<75} {v}")
    if approver:
        print(f"  parapheur answers: {approver.answered}; approver errors: {len(approver.errors)} "
              f"{approver.errors[:3]}")
    if batch_lines:
        b = batch_lines["b"]
        print(f"  batch: {b['archived']}/{b['n']} archived, {b['n'] - b['archived']} did not reach \"archive\": "
              f"{b['states']}")
    if floor:
        thr = floor["throughput_per_hour"]
        print(f"  pipeline floor on the batch docs: {thr or 0:.0f} dossiers/h to \"archive\" "
              f"({floor['archived']}/{floor['n']}), {floor['cpu_per_dossier']:.3f} CPU-s/dossier, by component "
              f"{ {k: round(v, 3) for k, v in floor['cpu_by_component'].items()} }")
    print()
    flush_figures()
    if tmp is not None and not args.keep_state and rc == 0:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp is not None:
        print(f"state kept in {tmp}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
