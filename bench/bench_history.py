"""Scheduler health with history: reaction on an empty platform, after 100,000 completed dossiers, after retention.

    .venv/bin/python bench/bench_history.py [--quick] [--history 100000] [--periodic 20000] [--reaction 20]

Starts its own platform (like bench_platform: automatic circuits, simulators answering at once), then:
  empty     N drops, one every --spacing s: drop -> dossier run start (median, p95), and the
            latency of the Airflow REST list of a dossier DAG's runs (what the UI's grid reads);
  history   seeds --history completed dossiers: in Airflow's database, clones of a real finished
            dossier run (its dag_run, task instance and XCom rows: the same columns, new ids),
            ended 40 days ago, plus --periodic runs of the collection DAG; in demat's database, the
            same number of archived dossiers (dossier rows; their journal is a hash chain and is not
            forged, see RESULTS.md); then ANALYZE, and the same reaction and REST measurements;
  retention the nightly retention job's own code (plugins/demat_airflow/retention.py: finished runs of
            final dossiers older than 30 days, periodic runs older than 3 days through `airflow db
            clean`): its duration and what it deleted; then the same measurements again.
Each phase also carries a batch of --batch mixed dossiers to "archivé" (throughput, counting only
the archived; `..._not_archived` says how many did not), so the issue's "reaction and throughput
unchanged within 10 % with 100,000 finished dossiers" is read from one run. The platform runs at
its default inbox settings (inotify; said in each reaction figure's note).
The baseline of each "history" and "after retention" figure is the "empty" figure of the same run.
Prints FIGURE lines.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, automatic_config, figure, loadavg, log, make_docs, settings_note  # noqa: E402
from bench_platform import (  # noqa: E402
    Deadline,
    Platform,
    med,
    pct,
    phase_reaction,
    wait_quiet,
    wait_tracked,
)

HIST_ID = "'hist-' || lpad(g::text, 7, '0')"  # the seeded dossier ids; their runs are dossier__<id>
HIST_RUN = "'dossier__' || " + HIST_ID
CHUNK = 10_000


# ------------------------------------------------------------------------------------------ seeding
def _columns(conn, table: str) -> list[str]:
    from sqlalchemy import text

    return list(conn.scalars(text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = :t "
        "ORDER BY ordinal_position"), {"t": table}))


def _clone(conn, table: str, overrides: dict[str, str], source: str, params: dict, omit: tuple[str, ...] = ()) -> int:
    """INSERT INTO table SELECT <each column, or its override expression> FROM <source>."""
    from sqlalchemy import text

    cols = [c for c in _columns(conn, table) if c not in omit]
    select = ", ".join(overrides.get(c, f"t.{c}") for c in cols)
    sql = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} FROM {source}"  # nosec B608 - bench constants
    return conn.execute(text(sql), params).rowcount


def archived_template(platform: Platform) -> str:
    """An archived dossier of the empty phase: the model of every seeded dossier and run."""
    from sqlalchemy import text

    with platform.demat_db.connect() as conn:
        tpl = conn.scalar(text("SELECT id FROM dossier WHERE state = 'archive' ORDER BY updated_at DESC LIMIT 1"))
    if tpl is None:
        raise RuntimeError("no archived dossier to use as a template (did the empty phase's dossiers fail?)")
    return tpl


def seed_airflow(platform: Platform, template_run: str, n: int, periodic: int) -> dict[str, int]:
    """Clone a finished dossier run n times (ended 40 days ago) and a collection run `periodic` times."""
    from sqlalchemy import text

    out = {"dag_run": 0, "task_instance": 0, "xcom": 0, "periodic_runs": 0}
    with platform.airflow_db.begin() as conn:
        tpl = conn.execute(text("SELECT dag_id, run_id FROM dag_run WHERE run_id = :r AND state = 'success'"),
                           {"r": template_run}).first()
        col = conn.execute(text(
            "SELECT dag_id, run_id FROM dag_run WHERE dag_id = 'demat_collect' AND state = 'success' "
            "ORDER BY end_date DESC LIMIT 1")).first()
    if tpl is None:
        raise RuntimeError("no finished dossier run to use as a template")
    run_cols = {
        "run_id": HIST_RUN,
        "logical_date": "NULL",
        "state": "'success'",
        "run_after": "now() - interval '40 days' + g * interval '1 second'",
        "queued_at": "now() - interval '40 days' + g * interval '1 second'",
        "start_date": "now() - interval '40 days' + g * interval '1 second'",
        "end_date": "now() - interval '40 days' + g * interval '1 second' + interval '90 seconds'",
        "last_scheduling_decision": "NULL",
    }
    ti_cols = {
        "id": "gen_random_uuid()",
        "run_id": HIST_RUN,
        "state": "CASE WHEN t.state IN ('success', 'skipped') THEN t.state ELSE 'success' END",
        "start_date": "now() - interval '40 days' + g * interval '1 second'",
        "end_date": "now() - interval '40 days' + g * interval '1 second' + interval '10 seconds'",
        "queued_dttm": "now() - interval '40 days' + g * interval '1 second'",
        "trigger_id": "NULL", "next_method": "NULL", "next_kwargs": "NULL",
    }
    for a in range(1, n + 1, CHUNK):
        b = min(n, a + CHUNK - 1)
        p = {"a": a, "b": b, "d": tpl.dag_id, "r": tpl.run_id}
        with platform.airflow_db.begin() as conn:
            out["dag_run"] += _clone(conn, "dag_run", run_cols, "dag_run t CROSS JOIN generate_series(:a, :b) g "
                                     "WHERE t.dag_id = :d AND t.run_id = :r", p, omit=("id",))
            out["task_instance"] += _clone(conn, "task_instance", ti_cols, "task_instance t CROSS JOIN "
                                           "generate_series(:a, :b) g WHERE t.dag_id = :d AND t.run_id = :r", p)
            out["xcom"] += _clone(conn, "xcom", {"dag_run_id": "nr.id", "run_id": "nr.run_id"},
                                  f"xcom t CROSS JOIN generate_series(:a, :b) g JOIN dag_run nr ON nr.dag_id = t.dag_id "
                                  f"AND nr.run_id = {HIST_RUN} WHERE t.dag_id = :d AND t.run_id = :r", p)
        log(f"history: {b}/{n} dossier runs in Airflow's database")
    if col is not None and periodic:
        cols = dict(run_cols, run_id="'scheduled__hist-' || g", run_type="'scheduled'")
        tcols = dict(ti_cols, run_id="'scheduled__hist-' || g")
        for a in range(1, periodic + 1, CHUNK):
            p = {"a": a, "b": min(periodic, a + CHUNK - 1), "d": col.dag_id, "r": col.run_id}
            with platform.airflow_db.begin() as conn:
                out["periodic_runs"] += _clone(conn, "dag_run", cols, "dag_run t CROSS JOIN generate_series(:a, :b) g "
                                               "WHERE t.dag_id = :d AND t.run_id = :r", p, omit=("id",))
                out["task_instance"] += _clone(conn, "task_instance", tcols, "task_instance t CROSS JOIN "
                                               "generate_series(:a, :b) g WHERE t.dag_id = :d AND t.run_id = :r", p)
    with platform.airflow_db.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return out


def seed_demat(platform: Platform, tpl: str, n: int) -> int:
    """n archived dossiers cloned from the archived dossier `tpl` (new id, sha256 and run id)."""
    from sqlalchemy import text

    cols = {"id": HIST_ID, "sha256": "encode(sha256(('hist' || g)::bytea), 'hex')",
            "run_id": HIST_RUN, "idacte": "NULL", "nomfic": "NULL", "message_identifier": "NULL",
            "transmission_name": "NULL", "archive_id": "NULL",
            "created_at": "now() - interval '40 days' + g * interval '1 second'",
            "updated_at": "now() - interval '40 days' + g * interval '1 second' + interval '90 seconds'"}
    done = 0
    for a in range(1, n + 1, CHUNK):
        with platform.demat_db.begin() as conn:
            done += _clone(conn, "dossier", cols, "dossier t CROSS JOIN generate_series(:a, :b) g WHERE t.id = :i",
                           {"a": a, "b": min(n, a + CHUNK - 1), "i": tpl})
    with platform.demat_db.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return done


def count_rows(platform: Platform) -> dict[str, int]:
    from sqlalchemy import text

    with platform.airflow_db.connect() as conn:
        return {t: conn.scalar(text(f"SELECT count(*) FROM {t}"))  # nosec B608 - constant table names
                for t in ("dag_run", "task_instance", "xcom")}


# ------------------------------------------------------------------------------------------ measures
def rest_list_latency(platform: Platform, tries: int = 5) -> float:
    """Median latency of the REST list the UI reads for a dossier DAG (latest 50 runs)."""
    from simulators.signer import AirflowClient

    client = AirflowClient(platform.base_url, "admin", platform.secrets["passwords"]["admin"])
    times = []
    for _ in range(tries):
        t = time.perf_counter()
        client.get("/dags/demat_acte/dagRuns?limit=50&order_by=-start_date")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(platform: Platform, docs, spacing: float, label: str) -> dict:
    log(f"{label}: {len(docs)} drops every {spacing:g} s (load {loadavg()})")
    shas, r = phase_reaction(platform, docs, spacing, timeout=600)
    wait_quiet(platform, shas, timeout=300)
    return {"start_median": med(r["start"]), "start_p95": pct(r["start"], 95), "n": len(r["start"]),
            "rest": rest_list_latency(platform), "note": r["note"]}


def measure_batch(platform: Platform, docs, label: str, timeout: float = 900) -> dict:
    """B mixed dossiers dropped at once: dossiers/h to "archivé", counting only the archived."""
    log(f"{label}: batch of {len(docs)} (load {loadavg()})")
    load0 = loadavg()
    dropped = [(d, d.drop(platform.state / "inbox")) for d in docs]
    t0 = min(t for _, t in dropped)
    info = wait_tracked(platform, dropped, "archive", timeout, f"{label} batch")
    archived = [info[d.sha256]["times"]["archive"] for d, _ in dropped
                if d.sha256 in info and "archive" in info[d.sha256]["times"]]
    span = (max(archived) - t0) if archived else None
    return {"throughput": len(archived) / span * 3600 if span else None, "not_archived": len(docs) - len(archived),
            "note": f"{len(archived)}/{len(docs)} archived; load {load0} -> {loadavg()}"}


def run_retention(platform: Platform) -> tuple[float, dict]:
    """The nightly job's own function, with the platform's databases and `airflow` environment."""
    sys.path.insert(0, str(ROOT / "plugins"))
    from demat_airflow.retention import run_retention as retention
    from flows.pipeline.retention import disposable_runs
    from flows.settings import Settings

    os.environ.update({"AIRFLOW_HOME": str(platform.state / "airflow"),
                       "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": platform.airflow_url,
                       "DEMAT_STATE": str(platform.state), "DEMAT_CONFIG": str(platform.state / "config.yaml"),
                       "DEMAT_DATABASE_URL": platform.demat_url})
    settings = Settings.from_env()
    t = time.perf_counter()
    out = retention(platform.airflow_url, lambda ids: disposable_runs(settings, ids), dossier_days=30,
                    periodic_days=3)
    return time.perf_counter() - t, out


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="history 20,000, periodic 5,000, reaction 10")
    ap.add_argument("--history", type=int)
    ap.add_argument("--periodic", type=int)
    ap.add_argument("--reaction", type=int)
    ap.add_argument("--spacing", type=float, default=2.5)
    ap.add_argument("--batch", type=int, help="mixed dossiers carried to \"archivé\" in each phase (throughput)")
    ap.add_argument("--max-minutes", type=float, default=60)
    args = ap.parse_args(argv)
    n_hist = args.history if args.history is not None else (20_000 if args.quick else 100_000)
    n_periodic = args.periodic if args.periodic is not None else (5_000 if args.quick else 20_000)
    n_react = args.reaction if args.reaction is not None else (10 if args.quick else 20)
    n_batch = args.batch if args.batch is not None else (10 if args.quick else 100)

    def on_alarm(signum, frame):
        raise Deadline(f"bench_history: overall time-out of {args.max_minutes:g} min")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.max_minutes * 60))
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(Deadline("bench_history: SIGTERM")))

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    docs = [make_docs(n_react, f"{stamp}{i + 7}", mix="actes") for i in range(3)]
    batches = [make_docs(n_batch, f"{stamp}{i + 4}", mix="mixed") for i in range(3)]
    platform = None
    try:
        state = Path(tempfile.mkdtemp(prefix="bench-history-"))
        log(f"starting the platform in {state} (load {loadavg()})")
        # the platform's default inbox settings (said in every reaction figure's note)
        inbox_note = settings_note()
        platform = Platform.start(state, {"DEMAT_SIM_DELAY": "0", "DEMAT_SIM_LATER_DELAY": "0"},
                                  config=automatic_config(state / "bench-auto.yaml"))
        time.sleep(10)

        empty = measure(platform, docs[0], args.spacing, "empty")
        for key in ("start_median", "start_p95"):
            print(figure(f"history_empty_reaction_{key}", empty[key], "s", note=f"{inbox_note}; {empty['note']}"),
                  flush=True)
        print(figure("history_empty_rest_runs_list", empty["rest"] * 1000, "ms"), flush=True)
        b_empty = measure_batch(platform, batches[0], "empty") if n_batch else None
        if b_empty:
            print(figure("history_empty_batch_throughput_to_archive", b_empty["throughput"], "dossiers/h",
                         note=b_empty["note"]), flush=True)
            print(figure("history_empty_batch_not_archived", b_empty["not_archived"], "dossiers"), flush=True)

        log(f"history: seeding {n_hist:,} dossiers and {n_periodic:,} collection runs (load {loadavg()})")
        t = time.perf_counter()
        template = archived_template(platform)
        seeded = seed_airflow(platform, f"dossier__{template}", n_hist, n_periodic)
        seeded["dossier"] = seed_demat(platform, template, n_hist)
        log(f"history seeded in {time.perf_counter() - t:.0f} s: {seeded}; tables {count_rows(platform)}")

        hist = measure(platform, docs[1], args.spacing, "history")
        note = f"{n_hist:,} dossiers + {n_periodic:,} periodic runs of history; {inbox_note}; {hist['note']}"
        for key in ("start_median", "start_p95"):
            print(figure(f"history_{n_hist // 1000}k_reaction_{key}", hist[key], "s", empty[key], note=note),
                  flush=True)
        print(figure(f"history_{n_hist // 1000}k_rest_runs_list", hist["rest"] * 1000, "ms", empty["rest"] * 1000),
              flush=True)
        if b_empty:
            b_hist = measure_batch(platform, batches[1], "history")
            print(figure(f"history_{n_hist // 1000}k_batch_throughput_to_archive", b_hist["throughput"],
                         "dossiers/h", b_empty["throughput"], note=f"{n_hist:,} dossiers of history; {b_hist['note']}"),
                  flush=True)
            print(figure(f"history_{n_hist // 1000}k_batch_not_archived", b_hist["not_archived"], "dossiers"),
                  flush=True)

        log(f"retention: the nightly job's purge (load {loadavg()})")
        took, out = run_retention(platform)
        left = count_rows(platform)
        log(f"retention: {out}; tables now {left}")
        print(figure("retention_duration", took, "s", note=f"{out['runs_dossiers_supprimes']:,} dossier runs "
                     f"deleted of {out['runs_dossiers_examines']:,} examined; tables after {left}"), flush=True)

        after = measure(platform, docs[2], args.spacing, "after retention")
        for key in ("start_median", "start_p95"):
            print(figure(f"history_after_retention_reaction_{key}", after[key], "s", empty[key],
                         note=f"{inbox_note}; {after['note']}"), flush=True)
        print(figure("history_after_retention_rest_runs_list", after["rest"] * 1000, "ms", empty["rest"] * 1000),
              flush=True)
        if b_empty:
            b_after = measure_batch(platform, batches[2], "after retention")
            print(figure("history_after_retention_batch_throughput_to_archive", b_after["throughput"], "dossiers/h",
                         b_empty["throughput"], note=b_after["note"]), flush=True)
            print(figure("history_after_retention_batch_not_archived", b_after["not_archived"], "dossiers"),
                  flush=True)
        return 0
    except Deadline as exc:
        log(str(exc))
        return 1
    finally:
        signal.alarm(0)
        if platform is not None:
            platform.stop()


if __name__ == "__main__":
    sys.exit(main())
