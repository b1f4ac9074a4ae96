"""The floor: demat's work for N dossiers without Airflow, to tell what the orchestration costs.

    .venv/bin/python bench/bench_floor.py [--dossiers 60] [--mix mixed] [--mode pipeline|domain]
        [--workers 2] [--per-upload-connect]

Two floors, named for what they do:

`--mode pipeline` (the default, the baseline of bench_platform): THE SAME WORK AS THE PLATFORM for
the same documents, by the platform's own step functions (flows/pipeline, which the DAG tasks
call), in plain processes: a real PostgreSQL (embedded.postgres, demat's schema), the
content-addressed store, the inbox (drop, claim, sweep: dossier rows, originals stored, journal
with its hash chain), validation (reports attached), signature as the platform signs (the
benchmark's automatic circuit: PES and actes signed with the official's certificate), the
@ctes / PES transmission uploaded over SFTP, then the passes of demat_collect's task (ARActe /
PES_ACQUIT collected and parsed, SEDA package built with the journal and deposited, the SAE's
replies collected and parsed) until every dossier is final, and one RFC 3161 pass on the journal.
The passes run back to back (half a second apart when one moved nothing), where the platform
waits DEMAT_COLLECT_SECONDS (20 s) between them: that wait is part of what the floor leaves out. The simulators are the platform's (`python -m simulators`, same arguments, answering at
once). `--workers` processes carry dossiers side by side (default: the machine's cores, as the
platform's executor uses them); the collection runs in the main process meanwhile. What the floor
does NOT do, by design: Airflow (scheduler, triggerer, API server, DAG processor, task
supervisors, its metadata database), the inbox watcher (one sweep after the drops), the alerts and
the antivirus when clamd is not running (the same as the platform's: start_embedded_clamd).
So platform − this floor = Airflow's own cost, called "orchestration" in the figures.

`--mode domain` (the floor of the figures before 2026-12-07, figures `floor_domain_*`): demat's
domain functions only, one process, in memory: validate, sign PES (NOT actes), build the @ctes
transmission, SFTP uploads, SEDA package. It leaves out the database, the store, the journal, the
acte signature, the collection of answers: it is not the platform's work and is never called so.

CPU: this process and its workers (`time.process_time` by step per dossier; psutil over the tree),
PostgreSQL and the simulators apart (psutil), by component. Throughput counts only the dossiers
that reached "archivé", out of those dropped (the others are counted and printed).
Prints a table, then FIGURE lines (the floor has no baseline of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEMO_CONFIG,
    ROOT,
    Doc,
    SimulatorProcess,
    TreeMeter,
    automatic_config,
    cpu_delta,
    figure,
    loadavg,
    log,
    make_docs,
)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

STEPS = ("validate", "sign_or_envelope", "upload_transmission", "package", "upload_package")


class Floor:
    def __init__(self, work: Path, config_path: Path = DEMO_CONFIG, *, per_upload_connect: bool = False):
        from flows.config import load_config
        from flows.signature.pki import create_demo_pki

        self.work = Path(work)
        self.config = load_config(config_path)
        self.pki = self.work / "pki"
        officials = [(o.certificate, o.name, o.role) for c in self.config.collectivites for o in c.officials]
        create_demo_pki(self.pki, officials)
        self.per_upload_connect = per_upload_connect
        self.sims = SimulatorProcess(self.work / "sims", delay=0.0, later_delay=0.0, config=config_path)
        self._eps: dict[str, object] = {}
        self.known: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.serial = 0

    def __enter__(self) -> Floor:
        self.sims.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for ep in self._eps.values():
            try:
                ep.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - closing best effort
                pass
        self.sims.__exit__()

    def _upload(self, counterpart: str, name: str, data: bytes) -> None:
        upload_dir = self.sims.endpoints[counterpart].get("upload_dir", "/depot")
        if self.per_upload_connect:
            with self.sims.endpoint(counterpart) as ep:
                ep.upload_atomic(upload_dir, name, data)
            return
        ep = self._eps.get(counterpart)
        if ep is None:
            ep = self.sims.endpoint(counterpart).__enter__()
            self._eps[counterpart] = ep
        ep.upload_atomic(upload_dir, name, data)

    def connect_cost(self) -> float:
        """CPU seconds of one SFTP connection (handshake + auth + close), measured once."""
        c0 = time.process_time()
        with self.sims.endpoint("sae") as ep:
            ep.listdir(self.sims.endpoints["sae"].get("reply_dir", "/retour"))
        return time.process_time() - c0

    def process(self, doc: Doc, path: Path) -> dict:
        """One dossier, start to end. Returns {step: (cpu, wall)} and the outcome."""
        from flows.archive.seda import ArchiveFile, ArchiveRequest, build_package

        coll = self.config.collectivite(doc.collectivite)
        cpu: dict[str, float] = {}
        wall: dict[str, float] = {}

        def mark(step, c0, w0):
            cpu[step] = time.process_time() - c0
            wall[step] = time.perf_counter() - w0

        files: list[ArchiveFile] = []
        now = datetime.now(UTC)
        c0, w0 = time.process_time(), time.perf_counter()
        if doc.flow == "helios":
            from flows.helios.validate import validate_pes
            from flows.quality.gate import run_tiers_gate

            report = validate_pes(path, known_nomfics=self.known[(doc.collectivite, "nomfic")])
            quality = None
            if report.ok or all(f.layer in ("metier", "qualite") for f in report.errors):
                quality = run_tiers_gate(path, engine="auto")  # as the pipeline: GX only when pandas finds something
                report.extend(quality.findings)
                html = quality.to_html().encode("utf-8")
                quality.to_json()
                files.append(ArchiveFile(name="rapport-qualite-tiers.html", data=html, role="rapport",
                                         mime="text/html", date=now))
            self.known[(doc.collectivite, "nomfic")].add(report.summary.get("nomfic") or doc.key)
        else:
            from flows.actes.validate import validate_acte_zip

            report = validate_acte_zip(path, coll, known_numeros=self.known[(doc.collectivite, "numero")])
            self.known[(doc.collectivite, "numero")].add(report.summary.get("numero_interne") or doc.key)
        files.append(ArchiveFile(name="rapport-validation.json", data=report.to_json().encode("utf-8"),
                                 role="rapport", mime="application/json", date=now))
        mark("validate", c0, w0)
        if not report.ok:
            return {"ok": False, "cpu": cpu, "wall": wall, "errors": [f.rule for f in report.errors]}

        c0, w0 = time.process_time(), time.perf_counter()
        if doc.flow == "helios":
            from flows.signature.xades import sign_pes

            step = next(s for s in coll.circuit("pes") if s.kind == "SIGNATURE")
            official = coll.official(step.official)
            password = (self.pki / f"{official.certificate}.pass").read_bytes().strip()
            signed = sign_pes(doc.data, self.pki / f"{official.certificate}.p12", password, role=official.role,
                              place=coll.name)
            tx_name, tx_data, counterpart = f"PES_{doc.key}.xml", signed, "dgfip"
            files.insert(0, ArchiveFile(name=f"signe-{doc.name}", data=signed, role="signature",
                                        mime="application/xml", date=now))
        else:
            from flows.actes.intake import read_submission
            from flows.actes.transmission import build_transmission

            self.serial += 1
            tx = build_transmission(read_submission(path), coll, serial=self.serial, trigram=self.config.trigram)
            tx_name, tx_data, counterpart = tx.archive_name, tx.archive_bytes, "prefecture"
            files.insert(0, ArchiveFile(name=doc.name, data=doc.data, role="document", mime="application/zip",
                                        date=now))
        files.append(ArchiveFile(name=tx_name, data=tx_data, role="document", date=now))
        mark("sign_or_envelope", c0, w0)

        c0, w0 = time.process_time(), time.perf_counter()
        self._upload(counterpart, tx_name, tx_data)
        mark("upload_transmission", c0, w0)

        c0, w0 = time.process_time(), time.perf_counter()
        journal = json.dumps({"dossier": doc.key, "journal": [{"date": now.isoformat(), "evenement": "recu"}]},
                             ensure_ascii=False).encode("utf-8")
        files.append(ArchiveFile(name="journal.json", data=journal, role="journal", mime="application/json",
                                 date=now))
        cfg = self.config
        request = ArchiveRequest(
            dossier_id=f"{doc.collectivite}-{doc.flow}-{doc.sha256[:10]}", title=(report.summary.get("objet")
                                                                                   or doc.name)[:250],
            flow=doc.flow, doc_type="deliberation" if doc.flow == "actes" else "pes",
            collectivite_name=coll.name, collectivite_siren=coll.siren,
            profile=coll.archive_profile("deliberation" if doc.flow == "actes" else "pes"),
            start_date=now.date(), end_date=now.date(), files=files, archival_agency=cfg.archival_agency,
            transferring_agency=cfg.transferring_agency, keywords=[doc.key, coll.name], transfer_date=now,
        )
        package = build_package(request, version=cfg.seda_version, digest_algorithm=cfg.digest_algorithm,
                                fmt=cfg.package_format)
        data = package.data
        mark("package", c0, w0)

        c0, w0 = time.process_time(), time.perf_counter()
        self._upload("sae", package.name, data)
        mark("upload_package", c0, w0)
        return {"ok": True, "cpu": cpu, "wall": wall}


def run_domain_floor(docs: list[Doc], work: Path, *, config_path: Path = DEMO_CONFIG, per_upload_connect: bool = False,
                     warmup: bool = True) -> dict:
    """The domain-only floor over `docs` (no database, journal, acte signature nor answers: see the
    module's docstring); returns throughput, CPU per dossier (total, by step, by flow)."""
    src = Path(work) / "docs"
    src.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in docs:
        p = src / d.collectivite / d.flow / d.name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(d.data)
        paths.append(p)
    with Floor(Path(work), config_path, per_upload_connect=per_upload_connect) as floor:
        if warmup:  # imports (lxml schemas, pandas, GE context) are a one-off per process, not per dossier
            from _common import make_docs as _mk

            c0 = time.process_time()
            for w in _mk(2, "WARMUP" + datetime.now(UTC).strftime("%H%M%S"), config_path=config_path):
                wp = src / "warmup" / w.name
                wp.parent.mkdir(parents=True, exist_ok=True)
                wp.write_bytes(w.data)
                floor.process(w, wp)
            warm_cpu = time.process_time() - c0
        else:
            warm_cpu = 0.0
        connect_cpu = floor.connect_cost()
        results = []
        sims = TreeMeter(lambda: [floor.sims.proc.pid])
        s0 = sims.sample()
        c0, w0 = time.process_time(), time.perf_counter()
        for d, p in zip(docs, paths, strict=True):
            results.append((d, floor.process(d, p)))
        cpu_total, wall_total = time.process_time() - c0, time.perf_counter() - w0
        time.sleep(2)  # the simulators answer what was just uploaded
        sims_cpu = sum(cpu_delta(s0, sims.sample()).values())
    failed = [(d.name, r.get("errors")) for d, r in results if not r["ok"]]
    by_step = {s: sum(r["cpu"].get(s, 0.0) for _, r in results) / len(results) for s in STEPS}
    by_flow: dict[str, list[float]] = defaultdict(list)
    for d, r in results:
        by_flow[d.flow].append(sum(r["cpu"].values()))
    return {
        "n": len(docs), "failed": failed, "wall": wall_total, "cpu": cpu_total,
        "throughput_per_hour": len(docs) / wall_total * 3600, "cpu_per_dossier": cpu_total / len(docs),
        "cpu_by_step": by_step, "cpu_by_flow": {f: statistics.mean(v) for f, v in by_flow.items()},
        "wall_by_flow": {f: statistics.mean(sum(r["wall"].values()) for d, r in results if d.flow == f)
                         for f in by_flow},
        "warmup_cpu": warm_cpu, "connect_cpu": connect_cpu, "sims_cpu_per_dossier": sims_cpu / len(docs),
    }


# --------------------------------------------------------------------------------------------- pipeline floor
PIPELINE_STEPS = ("validate", "sign", "transmit")

_W: dict = {}  # what a worker process needs: settings, endpoints (set before the fork)


class Endpoints:
    """counterpart -> a fresh SftpEndpoint (one connection per call, as the platform's steps do)."""

    def __init__(self, endpoints: dict):
        self.endpoints = endpoints

    def __call__(self, counterpart: str):
        from flows.transport.sftp import SftpEndpoint

        ep = self.endpoints[counterpart]
        return SftpEndpoint(host=ep["host"], port=ep["port"], username=ep["username"], key_path=ep["key_path"],
                            host_key=ep["host_key"])

    def dirs(self, counterpart: str) -> tuple[str, str]:
        ep = self.endpoints[counterpart]
        return ep.get("upload_dir", "depot"), ep.get("reply_dir", "retour")


def _worker_init() -> None:
    """A forked worker must not share the parent's database connections: drop them, unused."""
    from flows.dossier.db import engine

    engine(_W["settings"].database_url).dispose(close=False)
    engine.cache_clear()


def _carry(dossier_id: str) -> dict:
    """What the automatic circuit's `validate` task does for one dossier: validate, sign, transmit."""
    from flows.dossier import service
    from flows.dossier.db import session_scope
    from flows.pipeline import steps

    settings, eps = _W["settings"], _W["endpoints"]
    cpu: dict[str, float] = {}
    c0 = time.process_time()
    out = steps.validate(settings, dossier_id)
    cpu["validate"] = time.process_time() - c0
    if out.proceed and not steps.has_parapheur(settings, dossier_id):
        c0 = time.process_time()
        signed = steps.sign(settings, dossier_id)
        cpu["sign"] = time.process_time() - c0
        if signed.proceed:
            c0 = time.process_time()
            with session_scope(settings.database_url) as session:
                flow = service.get(session, dossier_id).flow
            upload_dir, _ = eps.dirs("prefecture" if flow == "actes" else "dgfip")
            out = steps.transmit(settings, dossier_id, eps, upload_dir)
            cpu["transmit"] = time.process_time() - c0
        else:
            out = signed
    return {"id": dossier_id, "state": out.state, "cpu": cpu}


class PipelineFloor:
    """The platform's state (PostgreSQL, store, inbox, PKI, TSA, simulators) without Airflow."""

    def __init__(self, work: Path, config_path: Path):
        self.state = Path(work) / "state"
        self.config_source = config_path
        self.pg = None
        self.sims: SimulatorProcess | None = None
        self.clamd = None

    def __enter__(self) -> PipelineFloor:
        from embedded.platform import DEMO_SIMULATOR_ARGS, Layout, prepare_state
        from embedded.postgres import EmbeddedPostgres, free_port
        from flows.antivirus import start_embedded_clamd
        from flows.dossier.db import create_schema
        from flows.settings import Settings

        layout = Layout(self.state.resolve())
        prepare_state(layout, self.config_source)  # the launcher's own: layout, config, demo PKI, TSA
        self.pg = EmbeddedPostgres(layout.pg_root, port=free_port())
        self.pg.start()
        self.pg.ensure_database("demat")
        create_schema(self.pg.url("demat"))
        self.clamd = start_embedded_clamd(layout.state, log)
        self.settings = Settings(
            state_dir=layout.state, config_path=layout.config, database_url=self.pg.url("demat"),
            store_root=str(layout.store), inbox_root=layout.inbox, pki_dir=layout.pki, reference_dir=None,
            inbox_events="auto")
        self.sims = SimulatorProcess(layout.state, delay=0.0, later_delay=0.0, config=layout.config,
                                     extra_args=DEMO_SIMULATOR_ARGS).__enter__()
        self.endpoints = Endpoints({k: v for k, v in self.sims.endpoints.items() if v.get("kind", "sftp") == "sftp"})
        return self

    def __exit__(self, *exc) -> None:
        if self.sims is not None:
            self.sims.__exit__()
        if self.clamd is not None:
            self.clamd.terminate()
            try:
                self.clamd.wait(10)
            except Exception:  # noqa: BLE001
                self.clamd.kill()
        if self.pg is not None:
            from flows.dossier.db import engine

            engine(self.settings.database_url).dispose()
            self.pg.stop()

    def roots(self) -> list[int]:
        pidfile = self.pg.data / "postmaster.pid"
        try:
            return [os.getpid(), int(pidfile.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return [os.getpid()]

    def collect_pass(self) -> int:
        """One demat_collect pass: acknowledgments, SAE deposits, SAE replies. Returns what it moved."""
        from flows.pipeline.collect import collect
        from flows.pipeline.deposit import deposit_ready

        moved = 0
        for cp in ("prefecture", "dgfip"):
            moved += collect(self.settings, cp, self.endpoints, self.endpoints.dirs(cp)[1]).processed
        moved += len(deposit_ready(self.settings, self.endpoints, self.endpoints.dirs("sae")[0],
                                   timing="immediate") or [])
        moved += collect(self.settings, "sae", self.endpoints, self.endpoints.dirs("sae")[1]).processed
        return moved

    def states(self, ids: list[str]) -> dict[str, str]:
        from sqlalchemy import select

        from flows.dossier.db import session_scope
        from flows.dossier.models import Dossier

        with session_scope(self.settings.database_url) as session:
            return dict(session.execute(select(Dossier.id, Dossier.state).where(Dossier.id.in_(ids))).all())


def run_floor(docs: list[Doc], work: Path, *, config_path: Path | None = None, workers: int | None = None,
              timeout: float = 1800) -> dict:
    """The pipeline floor (the platform's work without Airflow) over `docs`: see the module's docstring.

    Returns the throughput to "archivé" (counting only the archived), how many did not get there,
    CPU per dossier by component and by step."""
    import multiprocessing

    from flows.dossier import states as dstates
    from flows.dossier.timestamp import stamp_journal
    from flows.pipeline import ingest
    from flows.pipeline.classification import request_all

    final = {s for s, st in dstates.STATES.items() if st.final}
    work = Path(work)
    config_path = config_path or automatic_config(work / "bench-auto.yaml")
    workers = workers or len(os.sched_getaffinity(0))
    with PipelineFloor(work, config_path) as floor:
        # the platform requests the classification once at start (demat_classification): so does the floor
        request_all(floor.settings, floor.endpoints, floor.endpoints.dirs("prefecture")[0])
        deadline = time.monotonic() + 60
        from flows.pipeline.classification import current_date

        while time.monotonic() < deadline:
            floor.collect_pass()
            from flows.dossier.db import session_scope

            with session_scope(floor.settings.database_url) as session:
                if all(current_date(session, c.siren) for c in floor.settings.config.collectivites):
                    break
            time.sleep(0.5)
        _W.update(settings=floor.settings, endpoints=floor.endpoints)
        meter = TreeMeter(floor.roots)
        ctx = multiprocessing.get_context("fork")
        from flows.dossier.db import engine

        engine(floor.settings.database_url).dispose()  # nothing open across the fork
        # as the platform's scheduler does before forking task processes (plugins/airflow_local_settings.py):
        # the workers inherit the domain's imports rather than paying them per process
        sys.path.insert(0, str(ROOT / "plugins"))
        from airflow_local_settings import PRELOADED, preload

        preload(tuple(m for m in PRELOADED if not m.startswith("demat_airflow")))  # the domain, not Airflow
        pool = ctx.Pool(workers, initializer=_worker_init)
        try:
            load0 = loadavg()
            s0 = meter.sample()
            t0 = min(d.drop(floor.settings.inbox_root) for d in docs)
            c_sweep = time.process_time()
            started = ingest.sweep(floor.settings, min_age=0.0)
            sweep_cpu = time.process_time() - c_sweep
            ids = [s.dossier_id for s in started]
            pending = pool.map_async(_carry, ids, chunksize=1)
            reached: dict[str, float] = {}
            collect_cpu = 0.0
            passes = 0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                c = time.process_time()
                moved = floor.collect_pass()
                collect_cpu += time.process_time() - c
                passes += 1
                now = time.time()
                st = floor.states(ids)
                for i, state in st.items():
                    if state in final and i not in reached:
                        reached[i] = now
                if len(reached) == len(ids) and pending.ready():
                    break
                if not moved:
                    time.sleep(0.5)
            carried = pending.get(timeout=60) if pending.ready() else []
            c = time.process_time()
            stamp_journal(floor.settings.database_url, floor.settings.state_dir)  # one RFC 3161 pass
            stamp_cpu = time.process_time() - c
            s1 = meter.sample()
            wall = time.time() - t0
            final_states = floor.states(ids)
        finally:
            pool.terminate()
            pool.join()
    by_comp = cpu_delta(s0, s1)
    comps = {("floor processes" if k == "other" else k): v for k, v in by_comp.items()}
    platform_like = sum(v for k, v in comps.items() if k != "simulators")
    n = len(docs)
    archived = [reached[i] for i, st in final_states.items() if st == "archive" and i in reached]
    counts: dict[str, int] = {}
    for st in final_states.values():
        counts[st] = counts.get(st, 0) + 1
    if len(ids) < n:
        counts["non enregistré"] = n - len(ids)
    by_step = {s: sum(r["cpu"].get(s, 0.0) for r in carried) / n for s in PIPELINE_STEPS}
    by_step.update(sweep=sweep_cpu / n, collect_deposit=collect_cpu / n, timestamp=stamp_cpu / n)
    span = (max(archived) - t0) if archived else None
    return {
        "mode": "pipeline", "n": n, "archived": len(archived), "not_archived": n - len(archived), "states": counts,
        "wall": wall, "span_archive": span, "throughput_per_hour": (len(archived) / span * 3600) if span else None,
        "cpu_per_dossier": platform_like / n, "cpu_by_component": {k: v / n for k, v in comps.items()},
        "cpu_by_step": by_step, "sims_cpu_per_dossier": comps.get("simulators", 0.0) / n,
        "workers": workers, "collect_passes": passes, "load": f"{load0} -> {loadavg()}",
    }


def print_pipeline(r: dict, note: str) -> None:
    print(f"floor (pipeline, the platform's work without Airflow) : {r['n']} dossiers, {r['workers']} worker(s), "
          f"{r['collect_passes']} collection passes, {r['wall']:.1f} s, charge {r['load']}")
    thr = r["throughput_per_hour"]
    print(f"  archivés : {r['archived']}/{r['n']} (non archivés : {r['not_archived']}) ; états finaux {r['states']}")
    print(f"  débit jusqu'à « archivé » : {thr:.0f} dossiers/h" if thr else "  débit : aucun dossier archivé")
    print(f"  CPU par dossier (hors simulateurs) : {r['cpu_per_dossier']:.3f} s")
    for k, v in sorted(r["cpu_by_component"].items(), key=lambda kv: -kv[1]):
        print(f"  CPU {k:<26} {v:.3f} s/dossier")
    for k, v in r["cpu_by_step"].items():
        print(f"  CPU étape {k:<20} {v:.3f} s/dossier (processus du plancher)")
    print()
    print(figure("floor_pipeline_throughput_to_archive", thr, "dossiers/h", note=note))
    print(figure("floor_pipeline_not_archived", r["not_archived"], "dossiers", note=note))
    print(figure("floor_pipeline_cpu_per_dossier", r["cpu_per_dossier"], "CPU-s", note=note))
    for k, v in r["cpu_by_component"].items():
        print(figure(f"floor_pipeline_cpu_per_dossier_{k.replace(' ', '_')}", v, "CPU-s", note=note))
    for k, v in r["cpu_by_step"].items():
        print(figure(f"floor_pipeline_cpu_step_{k}", v, "CPU-s/dossier", note=note))


def print_domain(r: dict, note: str) -> None:
    print(f"floor (domain only: no database, journal, acte signature nor answers) : {r['n']} dossiers en "
          f"{r['wall']:.1f} s (CPU {r['cpu']:.1f} s), charge {note}")
    print(f"  débit : {r['throughput_per_hour']:.0f} dossiers/h ; CPU par dossier {r['cpu_per_dossier']:.3f} s")
    for s, v in r["cpu_by_step"].items():
        print(f"  CPU {s:<22} {v:.3f} s/dossier")
    for f, v in r["cpu_by_flow"].items():
        print(f"  CPU flux {f:<17} {v:.3f} s/dossier (mur {r['wall_by_flow'][f]:.3f} s)")
    print(f"  connexion SFTP : {r['connect_cpu']:.3f} s CPU ; échauffement (imports) : {r['warmup_cpu']:.2f} s CPU")
    print(f"  simulateurs (autre processus) : {r['sims_cpu_per_dossier']:.3f} s CPU/dossier")
    if r["failed"]:
        print(f"  ÉCHECS : {r['failed'][:5]}")
    print()
    print(figure("floor_domain_throughput", r["throughput_per_hour"], "dossiers/h", note=note))
    print(figure("floor_domain_cpu_per_dossier", r["cpu_per_dossier"], "CPU-s", note=note))
    for f, v in r["cpu_by_flow"].items():
        print(figure(f"floor_domain_cpu_per_dossier_{f}", v, "CPU-s", note=note))
    for s, v in r["cpu_by_step"].items():
        print(figure(f"floor_domain_cpu_{s}", v, "CPU-s/dossier", note=note))
    print(figure("floor_domain_sftp_connect_cpu", r["connect_cpu"], "CPU-s", note=note))
    print(figure("floor_domain_simulators_cpu_per_dossier", r["sims_cpu_per_dossier"], "CPU-s", note=note))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dossiers", type=int, default=60)
    ap.add_argument("--mix", choices=("mixed", "actes", "helios"), default="mixed")
    ap.add_argument("--mode", choices=("pipeline", "domain"), default="pipeline",
                    help="pipeline: the platform's work without Airflow (default); domain: demat's domain functions only")
    ap.add_argument("--workers", type=int, help="pipeline mode: processes carrying dossiers (default: the cores)")
    ap.add_argument("--per-upload-connect", action="store_true", help="domain mode: one SFTP connection per upload")
    args = ap.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    load0 = loadavg()
    log(f"floor ({args.mode}): generating {args.dossiers} documents ({args.mix})")
    docs = make_docs(args.dossiers, stamp, mix=args.mix)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        if args.mode == "pipeline":
            r = run_floor(docs, Path(tmp), workers=args.workers)
            note = f"n={r['n']} {args.mix}, {r['archived']} archived, {r['workers']} workers; load {r['load']}"
            print_pipeline(r, note)
            return 0 if r["not_archived"] == 0 else 1
        r = run_domain_floor(docs, Path(tmp), per_upload_connect=args.per_upload_connect)
    note = f"domain only (no database, journal, acte signature nor answers); load {load0} -> {loadavg()}"
    print_domain(r, note)
    return 1 if r["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
