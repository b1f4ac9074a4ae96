"""Celery scale-out: time to carry N dossiers to a final state with one worker, then with two.

    .venv/bin/python bench/bench_celery.py [--dossiers 20] [--concurrency 2]

The distributed set-up of tests/e2e/test_celery.py (embedded/distributed.py: Debian's PostgreSQL
and Redis on loopback, `airflow scheduler`, `dag-processor`, `triggerer`, `api-server` and two
`airflow celery worker`), with the benchmark circuit (automatic approval) and the simulators
answering at once, at the platform's default inbox settings. The phases alternate 1, 2, 1, 2
workers (--rounds pairs) so that their order (a warmer database, a calmer neighbour) favours
neither: in each phase N new mixed dossiers are dropped at once and carried to a final state; the
phase's throughput counts only those that reached "archivé" (the others are counted and said).
The figures are the medians over the phases of each size; the factor is their ratio. On one 2-core machine
both workers share the same two cores as everything else: the factor says how much the
second worker helps when the CPU is already shared, not what a second machine would give.
Prints FIGURE lines; says why and exits 0 when PostgreSQL or Redis are not installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import automatic_config, figure, loadavg, log, make_docs  # noqa: E402


def carry(cluster, docs, timeout: float) -> tuple[float, dict[str, int]]:
    """Drop the documents at once; seconds until the last "archivé" (every dossier final), and the final states."""
    from flows.dossier import service, states
    from flows.dossier.db import session_scope

    inbox = cluster.state / "inbox"
    t0 = min(d.drop(inbox) for d in docs)
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    last_archived = None
    while len(final) < len(docs):
        if time.monotonic() > deadline:
            log(f"{len(final)}/{len(docs)} dossiers final after {timeout:g} s: the others count as not archived")
            break
        with session_scope(cluster.database_url) as session:
            for d in docs:
                if d.sha256 not in final and (x := service.by_sha(session, d.sha256)) is not None \
                        and states.is_final(x.state):
                    final[d.sha256] = x.state
                    if x.state == "archive":
                        last_archived = time.time()
        time.sleep(1)
    counts: dict[str, int] = {}
    for st in final.values():
        counts[st] = counts.get(st, 0) + 1
    if len(final) < len(docs):
        counts["pas final"] = len(docs) - len(final)
    return (last_archived - t0) if last_archived else None, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dossiers", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=2, help="task slots per Celery worker")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--rounds", type=int, default=2, help="pairs of phases: 1, 2, 1, 2 ... workers")
    args = ap.parse_args(argv)

    from embedded.distributed import Cluster, debian_pg_bin, redis_server_bin

    if debian_pg_bin() is None or redis_server_bin() is None:
        log("skipped: Debian's postgresql and redis-server are needed (make test-deps)")
        return 0
    state = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    cluster = Cluster(state, config_source=automatic_config(Path(tempfile.mkdtemp()) / "bench-auto.yaml"),
                      sim_args=("--delay", "0", "--later-delay", "0"), concurrency=args.concurrency,
                      extra_env={"DEMAT_COLLECT_SECONDS": "5"})  # inbox: the platform's defaults
    rates: dict[int, list[float]] = {1: [], 2: []}
    missing: dict[int, int] = {1: 0, 2: 0}
    with cluster:
        log(f"starting the Celery cluster in {state} (load {loadavg()})")
        cluster.start(workers=2, timeout=600)
        time.sleep(10)
        load0 = loadavg()
        running = 2
        for i, workers in enumerate([1, 2] * args.rounds):
            if workers == 1 and running == 2:
                cluster.stop_worker(2)
            elif workers == 2 and running == 1:
                cluster.start_worker(2)
                time.sleep(15)  # let the second worker join the broker
            running = workers
            docs = make_docs(args.dossiers, f"{stamp}{i}")
            span, counts = carry(cluster, docs, args.timeout)
            archived = counts.get("archive", 0)
            missing[workers] += args.dossiers - archived
            rate = archived / span * 3600 if span else 0.0
            rates[workers].append(rate)
            log(f"phase {i + 1} ({workers} worker(s)): {archived}/{args.dossiers} archived, {rate:.0f}/h; {counts}")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    note = (f"n={args.dossiers} mixed per phase, phases 1,2 workers x{args.rounds} alternated, median; not archived: "
            f"{missing[1]} (1 worker) / {missing[2]} (2 workers); automatic circuit, {args.concurrency} slots per "
            f"worker; phases {[round(r) for r in rates[1]]} / {[round(r) for r in rates[2]]}; load {load0} -> "
            f"{loadavg()}")
    print(figure("celery_one_worker_throughput", one, "dossiers/h", note=note))
    print(figure("celery_two_workers_throughput", two, "dossiers/h", one, note=note))
    print(figure("celery_scaling_one_to_two_workers", two / one if one else None, "x", note=note))
    print(figure("celery_not_archived", missing[1] + missing[2], "dossiers", note=note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
