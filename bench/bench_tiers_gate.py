"""Benchmark of the tiers quality gate: Great Expectations versus the plain pandas floor.

Builds a synthetic tiers frame (default 1,000,000 occurrences of ~50,000 distinct tiers, ~2 % of
occurrences faulty), then times, in the same run and on the same frame, "frame -> findings" with
the GE engine (one validation run of the whole suite) and with the plain vectorised pandas engine.
Both share the preparation step (checksums, derived columns); both must find the same failures.

Usage: python bench/bench_tiers_gate.py [ROWS] [--tiers-ratio 0.05] [--defect-rate 0.02] [--seed 0]
       [--xml ROWS]   (also time streaming extraction of a generated PES_Aller of ROWS tiers)
Output: a human table, then machine lines FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--tiers-ratio", type=float, default=0.05)
    ap.add_argument("--defect-rate", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--xml", type=int, default=0, help="also time extraction of a PES_Aller with this many tiers")
    args = ap.parse_args(argv)

    from flows.quality import gate
    from flows.quality.plain import failures_plain
    from flows.quality.rules import build_rules, prepare, validation_frame
    from flows.quality.synth import synth_tiers_frame

    figures: list[tuple[str, float, str, str, str]] = []
    if args.xml:  # first, while the high-water mark of the process is still low
        figures += bench_extraction(args.xml)
    t = time.perf_counter()
    df = synth_tiers_frame(args.rows, defect_rate=args.defect_rate, seed=args.seed, tiers_ratio=args.tiers_ratio)
    t_synth = time.perf_counter() - t
    rules = build_rules()

    t = time.perf_counter()
    gate._gx()  # GE import + ephemeral context: a one-off cost per process
    suite = gate.build_suite(rules)
    t_ge_init = time.perf_counter() - t

    # shared preparation
    t = time.perf_counter()
    prepared = prepare(df)
    t_prepare = time.perf_counter() - t
    t = time.perf_counter()
    frame = validation_frame(prepared, rules)
    t_frame = time.perf_counter() - t

    # plain pandas floor
    t = time.perf_counter()
    fp = failures_plain(frame, rules, framed=True)
    t_plain_engine = time.perf_counter() - t
    t = time.perf_counter()
    findings_p, _ = gate.build_findings(prepared, fp, rules)
    t_plain_findings = time.perf_counter() - t

    # Great Expectations
    t = time.perf_counter()
    fg = gate.failures_ge(frame, rules, suite, framed=True)
    t_ge_engine = time.perf_counter() - t
    t = time.perf_counter()
    findings_g, _ = gate.build_findings(prepared, fg, rules)
    t_ge_findings = time.perf_counter() - t

    same = set(map(tuple, fp[["row", "rule"]].to_numpy().tolist())) == set(
        map(tuple, fg[["row", "rule"]].to_numpy().tolist())
    )
    shared = t_prepare + t_frame
    total_plain = shared + t_plain_engine + t_plain_findings
    total_ge = shared + t_ge_engine + t_ge_findings
    n = len(df)
    distinct = int(prepared["tiers_key"].nunique())
    faulty = int(fp["row"].nunique())

    print(f"Contrôle des tiers : {n:,} occurrences, {distinct:,} tiers distincts, {len(rules)} règles".replace(",", " "))
    print(f"  occurrences en défaut : {faulty:,} ; constats : {len(findings_g):,}".replace(",", " "))
    print(f"  mêmes constats GE / pandas : {'oui' if same else 'NON'}")
    print()
    print(f"{'étape':<44}{'GE (s)':>10}{'pandas (s)':>12}")
    rows = [
        ("génération du tableau (hors mesure)", t_synth, t_synth),
        ("import GE + contexte + suite (une fois)", t_ge_init, 0.0),
        ("préparation commune (clés, dérivées)", t_prepare, t_prepare),
        ("mise en forme (colonnes, catégories)", t_frame, t_frame),
        ("moteur de règles", t_ge_engine, t_plain_engine),
        ("constats (Finding, lieux en français)", t_ge_findings, t_plain_findings),
        ("TOTAL tableau -> constats", total_ge, total_plain),
    ]
    for name, a, b in rows:
        print(f"{name:<44}{a:>10.2f}{b:>12.2f}")
    print(f"\nGE / pandas : x{total_ge / total_plain:.1f} de bout en bout, x{t_ge_engine / t_plain_engine:.1f} sur le moteur seul")
    print(f"débit GE : {n / total_ge:,.0f} occurrences/s ; pandas : {n / total_plain:,.0f} occurrences/s".replace(",", " "))
    print(f"mémoire résidente max : {rss_mb():.0f} Mo")

    figures += [
        ("tiers_gate_ge_frame_to_findings", total_ge, "s", "tiers_gate_plain_frame_to_findings", f"{total_ge / total_plain:.2f}"),
        ("tiers_gate_plain_frame_to_findings", total_plain, "s", "-", "1.00"),
        ("tiers_gate_ge_engine_only", t_ge_engine, "s", "tiers_gate_plain_engine_only", f"{t_ge_engine / t_plain_engine:.2f}"),
        ("tiers_gate_plain_engine_only", t_plain_engine, "s", "-", "1.00"),
        ("tiers_gate_shared_prepare", shared, "s", "-", "-"),
        ("tiers_gate_ge_init_once", t_ge_init, "s", "-", "-"),
        ("tiers_gate_ge_rows_per_s", n / total_ge, "rows/s", "tiers_gate_plain_rows_per_s", f"{total_plain / total_ge:.2f}"),
        ("tiers_gate_plain_rows_per_s", n / total_plain, "rows/s", "-", "1.00"),
        ("tiers_gate_rows", n, "rows", "-", "-"),
        ("tiers_gate_findings", len(findings_g), "findings", "-", "-"),
        ("tiers_gate_same_failures", 1.0 if same else 0.0, "bool", "-", "-"),
    ]

    print()
    for name, value, unit, baseline, ratio in figures:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"FIGURE\t{name}\t{shown}\t{unit}\t{baseline}\t{ratio}")
    return 0 if same else 1


def bench_extraction(rows: int) -> list[tuple[str, float, str, str, str]]:
    """Streaming extraction of a generated PES_Aller with `rows` tiers (one per ligne)."""
    import gc

    from flows.quality.extract import iter_tiers_rows

    tiers = (
        '<Tiers><InfoTiers><IdTiers V="73282932000074"/><NatIdTiers V="01"/><RefTiers V="R{i}"/>'
        '<CatTiers V="50"/><NatJur V="03"/><Nom V="SOCIETE {i}"/></InfoTiers><Adresse><TypAdr V="1"/>'
        '<Adr2 V="1 RUE DES PINS"/><CP V="40000"/><Ville V="DAX"/><CodRes V="0"/></Adresse>'
        '<CpteBancaire><BIC V="SOGEFRPP"/><IBAN V="FR7630003017020002010412521"/><TitCpte V="SOCIETE"/>'
        "</CpteBancaire></Tiers>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.xml"
        with path.open("w", encoding="iso-8859-1") as fh:
            fh.write('<?xml version="1.0" encoding="ISO-8859-1"?>\n')
            fh.write('<n:PES_Aller xmlns:n="http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"><PES_DepenseAller>')
            per_piece = 1000
            for b in range(0, rows, per_piece * 10):
                fh.write(f'<Bordereau><BlocBordereau><Exer V="2026"/><IdBord V="{b // (per_piece * 10) + 1}"/></BlocBordereau>')
                for p in range(b, min(rows, b + per_piece * 10), per_piece):
                    fh.write(f'<Piece><BlocPiece><InfoPce><IdPce V="{p // per_piece + 1}"/></InfoPce></BlocPiece>')
                    for i in range(p, min(rows, p + per_piece)):
                        fh.write(f'<LigneDePiece><BlocLignePiece><InfoLignePce><IdLigne V="{i % per_piece + 1}"/>'
                                 f"</InfoLignePce></BlocLignePiece>{tiers.format(i=i)}</LigneDePiece>")
                    fh.write("</Piece>")
                fh.write("</Bordereau>")
            fh.write("</PES_DepenseAller></n:PES_Aller>")
        size_mb = path.stat().st_size / 1e6
        gc.collect()
        rss0 = rss_mb()
        t = time.perf_counter()
        count = sum(1 for _ in iter_tiers_rows(path, max_bytes=10**10))
        dt = time.perf_counter() - t
        grown = rss_mb() - rss0
    print(f"extraction en flux : {count:,} tiers, {size_mb:.0f} Mo en {dt:.1f} s ; hausse de la mémoire max {grown:.0f} Mo".replace(",", " "))
    return [
        ("tiers_extract_rows_per_s", count / dt, "rows/s", "-", "-"),
        ("tiers_extract_mb_per_s", size_mb / dt, "MB/s", "-", "-"),
        ("tiers_extract_peak_rss_growth", grown, "MB", "-", "-"),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
