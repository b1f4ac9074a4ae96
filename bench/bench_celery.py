"""Celery scale-out: time to carry N dossiers to a final state with one worker, then with two.

    .venv/bin/python bench/bench_celery.py [--dossiers 20] [--concurrency 2]

The distributed set-up of tests/e2e/test_celery.py (embedded/distributed.py: Debian's PostgreSQL
and Redis on loopback, `airflow scheduler`, `dag-processor`, `triggerer`, `api-server` and two
`airflow celery worker`), with the benchmark circuit (automatic approval) and the simulators
answering at once. Worker 2 is stopped, N mixed dossiers are dropped and carried to "archivé"
(or another final state); worker 2 is started again and N new dossiers are carried. The figure is
the ratio of the two durations (the baseline is the one-worker throughput). On one 2-core machine
both workers share the same two cores as everything else: the factor says how much the
second worker helps when the CPU is already shared, not what a second machine would give.
Prints FIGURE lines; says why and exits 0 when PostgreSQL or Redis are not installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import figure, loadavg, log, make_docs  # noqa: E402
from bench_platform import automatic_config  # noqa: E402


def carry(cluster, docs, timeout: float) -> tuple[float, dict[str, int]]:
    """Drop the documents at once; seconds until every dossier is final, and the final states."""
    from flows.dossier import service, states
    from flows.dossier.db import session_scope

    inbox = cluster.state / "inbox"
    t0 = min(d.drop(inbox) for d in docs)
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    while len(final) < len(docs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(final)}/{len(docs)} dossiers final after {timeout:g} s")
        with session_scope(cluster.database_url) as session:
            for d in docs:
                if d.sha256 not in final and (x := service.by_sha(session, d.sha256)) is not None \
                        and states.is_final(x.state):
                    final[d.sha256] = x.state
        time.sleep(1)
    counts: dict[str, int] = {}
    for st in final.values():
        counts[st] = counts.get(st, 0) + 1
    return time.time() - t0, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dossiers", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=2, help="task slots per Celery worker")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)

    from embedded.distributed import Cluster, debian_pg_bin, redis_server_bin

    if debian_pg_bin() is None or redis_server_bin() is None:
        log("skipped: Debian's postgresql and redis-server are needed (make test-deps)")
        return 0
    state = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    cluster = Cluster(state, config_source=automatic_config(Path(tempfile.mkdtemp()) / "bench-auto.yaml"),
                      sim_args=("--delay", "0", "--later-delay", "0"), concurrency=args.concurrency,
                      extra_env={"DEMAT_COLLECT_SECONDS": "5", "DEMAT_INBOX_MIN_AGE": "0.5"})
    with cluster:
        log(f"starting the Celery cluster in {state} (load {loadavg()})")
        cluster.start(workers=2, timeout=600)
        time.sleep(10)
        cluster.stop_worker(2)
        load0 = loadavg()
        one, states_one = carry(cluster, make_docs(args.dossiers, stamp + "1"), args.timeout)
        log(f"one worker: {args.dossiers} dossiers in {one:.0f} s {states_one}")
        cluster.start_worker(2)
        time.sleep(15)  # let the second worker join the broker
        two, states_two = carry(cluster, make_docs(args.dossiers, stamp + "2"), args.timeout)
        log(f"two workers: {args.dossiers} dossiers in {two:.0f} s {states_two}")
    note = (f"n={args.dossiers} mixed, automatic circuit, {args.concurrency} slots per worker; "
            f"load {load0} -> {loadavg()}")
    thr_one, thr_two = args.dossiers / one * 3600, args.dossiers / two * 3600
    print(figure("celery_one_worker_throughput", thr_one, "dossiers/h", note=note))
    print(figure("celery_two_workers_throughput", thr_two, "dossiers/h", thr_one, note=note))
    print(figure("celery_scaling_one_to_two_workers", one / two, "x", note=note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
