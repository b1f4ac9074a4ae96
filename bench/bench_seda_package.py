"""Benchmark: a SEDA package of a 100 MB dossier, against plain `tar czf` of the same files.

    .venv/bin/python bench/bench_seda_package.py [--mb 100] [--runs 3]

Generates the dossier in a temporary directory (an acte PDF and annexes that do not compress,
like real PDFs, plus a compressible PES XML), then measures in the same run:
  - build_package_to (tar.gz and zip): digests + bordereau + streamed archive, vs `tar czf`;
  - check_package of the built package (what the SAE does), vs `tar xzOf | sha512sum`;
  - peak resident memory of a build in a fresh process, vs the dossier size;
  - byte identity of a rebuild.
Prints a table, then machine lines: FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import timed  # noqa: E402

from flows.archive.check import check_package  # noqa: E402
from flows.archive.seda import ArchiveFile, ArchiveRequest, build_package_to  # noqa: E402
from flows.config.models import ArchiveProfile  # noqa: E402

MB = 1024 * 1024


def generate(directory: Path, total_mb: int) -> list[tuple[str, str]]:
    """(file name, role) written under directory; ~60 % incompressible PDF-like, ~40 % XML text."""
    rnd = random.Random(42)
    plan = [
        ("Délibération 2024-12.pdf", "document", 0.40, "pdf"),
        ("Annexe 1 - budget.pdf", "annexe", 0.10, "pdf"),
        ("Annexe 2 - état de la dette.pdf", "annexe", 0.10, "pdf"),
        ("PESALR2_213401234_240105_001.xml", "annexe", 0.38, "xml"),
        ("ARActe.xml", "acquittement", 0.01, "xml"),
        ("journal.json", "journal", 0.01, "json"),
    ]
    out = []
    for name, role, share, kind in plan:
        size = int(total_mb * MB * share)
        path = directory / name
        with path.open("wb") as fh:
            if kind == "pdf":
                fh.write(b"%PDF-1.7\n")
                written = 9
                while written < size:
                    n = min(4 * MB, size - written)
                    fh.write(rnd.randbytes(n))
                    written += n
            else:
                line_no = 0
                written = 0
                while written < size:
                    line = (
                        f'<Piece><BlocPiece><IdPce V="{line_no}"/><LibPce V="Fournitures {rnd.randint(1, 10**6)}"/>'
                        f'<MtHT V="{rnd.randint(1, 10**7) / 100:.2f}"/></BlocPiece></Piece>\n'
                    ).encode()
                    fh.write(line)
                    written += len(line)
                    line_no += 1
        out.append((name, role))
    return out


def request_for(directory: Path, files: list[tuple[str, str]]) -> ArchiveRequest:
    return ArchiveRequest(
        dossier_id="BENCH-100MB",
        title="Dossier de 100 Mo",
        flow="actes",
        doc_type="deliberation",
        collectivite_name="Commune de Banc-d'Essai",
        collectivite_siren="213401234",
        profile=ArchiveProfile(archival_agreement="ACC-BENCH"),
        start_date=date(2024, 1, 2),
        end_date=date(2024, 1, 3),
        files=[ArchiveFile(name, directory / name, role=role) for name, role in files],  # type: ignore[arg-type]
        transfer_date=datetime(2024, 1, 8, tzinfo=UTC),
    )


def cpu_seconds() -> float:
    """CPU (user + system) of this process and its finished children: robust to a loaded machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _hwm_kb() -> int:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(directory: str, fmt: str, out: str) -> None:
    """Run in a fresh process: one build, then report the peak RSS."""
    d = Path(directory)
    names = json.loads((d / ".plan.json").read_text())
    before = _hwm_kb()
    build_package_to(out, request_for(d, [tuple(x) for x in names]), fmt=fmt)
    print(json.dumps({"maxrss_kb": _hwm_kb(), "before_kb": before}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("DIR", "FMT", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    with tempfile.TemporaryDirectory(prefix="bench-seda-") as tmp:
        tmpdir = Path(tmp)
        src = tmpdir / "dossier"
        src.mkdir()
        files = generate(src, args.mb)
        (src / ".plan.json").write_text(json.dumps(files))
        dossier_bytes = sum((src / n).stat().st_size for n, _ in files)
        req = request_for(src, files)
        out = tmpdir / "out"
        out.mkdir()

        # warm the page cache so both sides read from memory
        for n, _ in files:
            with (src / n).open("rb") as fh:
                while fh.read(4 * MB):
                    pass

        names = [n for n, _ in files]
        builds, zips, tars, cpu_builds, cpu_tars = [], [], [], [], []
        for _ in range(args.runs):  # interleaved: a load change on the machine hits both sides alike
            c0 = cpu_seconds()
            t, pkg = timed(lambda: build_package_to(out / "p.tar.gz", req, fmt="tar.gz"), 1)
            cpu_builds.append(cpu_seconds() - c0)
            builds.append(t)
            c0 = cpu_seconds()
            t, _ = timed(
                lambda: subprocess.run(["tar", "czf", str(out / "plain.tar.gz"), "-C", str(src), *names], check=True), 1
            )
            cpu_tars.append(cpu_seconds() - c0)
            tars.append(t)
            t, zpkg = timed(lambda: build_package_to(out / "p.zip", req, fmt="zip"), 1)
            zips.append(t)
        t_build, t_tar, t_zip = statistics.median(builds), statistics.median(tars), statistics.median(zips)
        c_build, c_tar = statistics.median(cpu_builds), statistics.median(cpu_tars)
        tar_size = (out / "plain.tar.gz").stat().st_size
        first_sha = pkg.sha256
        rebuilt = build_package_to(out / "p2.tar.gz", req, fmt="tar.gz")
        identical = rebuilt.sha256 == first_sha and (out / "p2.tar.gz").read_bytes() == (out / "p.tar.gz").read_bytes()

        t_check, findings = timed(lambda: check_package(out / "p.tar.gz", known_agreements={"ACC-BENCH"}), 1)
        t_check_base, _ = timed(
            lambda: subprocess.run(f"tar xzOf '{out / 'plain.tar.gz'}' | sha512sum > /dev/null", shell=True, check=True), 1
        )

        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(src), "tar.gz", str(out / "child.tar.gz")],
            check=True, capture_output=True, text=True,
        )
        rss = json.loads(proc.stdout.strip().splitlines()[-1])
        peak_mb = rss["maxrss_kb"] / 1024
        base_mb = rss["before_kb"] / 1024

    dossier_mb = dossier_bytes / MB
    rows = [
        ("dossier (fichiers)", f"{dossier_mb:.1f} Mo", ""),
        ("build_package_to tar.gz", f"{t_build:.2f} s", f"tar czf : {t_tar:.2f} s  (x{t_build / t_tar:.2f})"),
        ("build_package_to zip", f"{t_zip:.2f} s", f"tar czf : {t_tar:.2f} s  (x{t_zip / t_tar:.2f})"),
        ("CPU build tar.gz", f"{c_build:.2f} s", f"tar czf (tar + gzip) : {c_tar:.2f} s  (x{c_build / c_tar:.2f})"),
        ("débit build tar.gz", f"{dossier_mb / t_build:.1f} Mo/s", ""),
        ("taille paquet tar.gz", f"{pkg.size / MB:.1f} Mo", f"tar czf : {tar_size / MB:.1f} Mo"),
        ("taille paquet zip", f"{zpkg.size / MB:.1f} Mo", ""),
        ("check_package", f"{t_check:.2f} s", f"tar xzOf | sha512sum : {t_check_base:.2f} s"),
        ("check_package résultat", "accepté" if not findings else f"{len(findings)} constat(s)", ""),
        ("RSS max processus neuf", f"{peak_mb:.0f} Mo", f"avant build : {base_mb:.0f} Mo ; dossier : {dossier_mb:.0f} Mo"),
        ("reconstruction identique", "oui" if identical else "NON", f"sha256 {first_sha[:16]}…"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"SEDA package benchmark — {args.mb} Mo, médiane de {args.runs} exécution(s), {os.cpu_count()} cœurs, "
          f"charge {os.getloadavg()[0]:.1f}")
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:>14}  {c}")
    figures = [
        ("seda_build_targz", t_build, "s", t_tar),
        ("seda_build_targz_cpu", c_build, "s", c_tar),
        ("seda_build_zip", t_zip, "s", t_tar),
        ("seda_package_size_targz", pkg.size / MB, "MB", tar_size / MB),
        ("seda_check_package", t_check, "s", t_check_base),
        ("seda_build_peak_rss", peak_mb, "MB", dossier_mb),
        ("seda_rebuild_identical", 1.0 if identical else 0.0, "bool", 1.0),
    ]
    for name, value, unit, baseline in figures:
        print(f"FIGURE\t{name}\t{value:.3f}\t{unit}\t{baseline:.3f}\t{value / baseline if baseline else 0:.3f}")
    if findings or not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
