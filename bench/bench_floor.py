"""The floor: demat's work for N dossiers done by a plain Python loop, no orchestration, no database.

    .venv/bin/python bench/bench_floor.py [--dossiers 60] [--mix mixed] [--per-upload-connect]

For each document (the same generator and the same mix as bench_platform): validate
(validate_pes + tiers quality gate / validate_acte_zip), serialise the reports, sign (PES: XAdES
per bordereau with the official's demo certificate) or build the @ctes transmission (acte),
upload it over SFTP to the counterpart simulator, build the SEDA package and upload it to the SAE
simulator. The simulators are `python -m simulators` in a temporary state on 127.0.0.1 (answering
at once; their work is not counted: it is another process). A plain loop keeps one SFTP connection
per counterpart; `--per-upload-connect` opens one per upload as the platform's steps do.

CPU time is time.process_time() of this process around each step (lxml, pandas/GE, cryptography,
paramiko threads): this is "demat's work" per dossier, used by bench_platform to split the
platform's CPU between demat and Airflow's own overhead.
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
    Doc,
    SimulatorProcess,
    TreeMeter,
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


def run_floor(docs: list[Doc], work: Path, *, config_path: Path = DEMO_CONFIG, per_upload_connect: bool = False,
              warmup: bool = True) -> dict:
    """The floor over `docs`; returns throughput, CPU per dossier (total, by step, by flow)."""
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dossiers", type=int, default=60)
    ap.add_argument("--mix", choices=("mixed", "actes", "helios"), default="mixed")
    ap.add_argument("--per-upload-connect", action="store_true")
    args = ap.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    load0 = loadavg()
    log(f"floor: generating {args.dossiers} documents ({args.mix})")
    docs = make_docs(args.dossiers, stamp, mix=args.mix)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        r = run_floor(docs, Path(tmp), per_upload_connect=args.per_upload_connect)
    load1 = loadavg()
    note = f"load {load0} -> {load1}"
    print(f"floor : {r['n']} dossiers en {r['wall']:.1f} s (CPU {r['cpu']:.1f} s), charge {note}")
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
    print(figure("floor_throughput", r["throughput_per_hour"], "dossiers/h", note=note))
    print(figure("floor_cpu_per_dossier", r["cpu_per_dossier"], "CPU-s", note=note))
    for f, v in r["cpu_by_flow"].items():
        print(figure(f"floor_cpu_per_dossier_{f}", v, "CPU-s", note=note))
    for s, v in r["cpu_by_step"].items():
        print(figure(f"floor_cpu_{s}", v, "CPU-s/dossier", note=note))
    print(figure("floor_sftp_connect_cpu", r["connect_cpu"], "CPU-s", note=note))
    print(figure("floor_simulators_cpu_per_dossier", r["sims_cpu_per_dossier"], "CPU-s", note=note))
    return 1 if r["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
