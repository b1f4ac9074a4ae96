"""The row-wise engine (small files, no pandas) runs the same declared rules as the pandas and
Great Expectations engines and must flag exactly the same occurrences, places and values."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.quality import checks, rowwise
from flows.quality.extract import COLUMNS
from flows.quality.gate import check_frame, check_rows, run_tiers_gate
from flows.quality.rules import build_rules
from flows.quality.synth import DEFECTS, ibans, ribs, synth_tiers_frame

from .pesfactory import build_pes, company, person

KEY = lambda r: [(f.rule, f.place, f.value, f.severity, f.line) for f in r.findings]  # noqa: E731
SAME_SUMMARY = ("tiers_occurrences", "tiers_distincts", "erreurs_bloquantes", "avertissements", "tiers_a_corriger",
                "bordereaux_touches", "par_regle", "regles")


def _rows(df: pd.DataFrame) -> list[list]:
    return df[COLUMNS].astype(object).where(df[COLUMNS].notna(), None).to_numpy().tolist()


@pytest.mark.parametrize("seed, rate", [(11, 0.4), (12, 0.05), (13, 0.0)])
def test_rows_engine_equals_pandas_engine_on_synthetic_defects(seed, rate):
    df = synth_tiers_frame(3000, defect_rate=rate, seed=seed)
    df.loc[df.index[::97], "line"] = None  # a row without a source line
    plain = check_frame(df, engine="plain")
    rows = check_frame(df, engine="rows")
    assert KEY(rows) == KEY(plain)
    assert {k: rows.summary[k] for k in SAME_SUMMARY} == {k: plain.summary[k] for k in SAME_SUMMARY}
    assert rows.summary["moteur"] == "python"
    if rate:
        assert len(set(plain.summary["par_regle"])) >= 12 and len(plain.findings) > 100


def test_rows_engine_equals_ge_on_many_defects():
    df = synth_tiers_frame(1500, defect_rate=0.4, seed=21)
    assert KEY(check_frame(df, engine="rows")) == KEY(check_frame(df, engine="ge"))
    assert len(DEFECTS) >= 15


def _hostile_frame() -> pd.DataFrame:
    """Values aimed at the differences between a scalar and a vectorised check: blanks, unicode
    digits, lowercase, separators, wrong lengths, La Poste, Corsica, the same tiers twice with two
    accounts and two names."""
    base = synth_tiers_frame(40, defect_rate=0.0, seed=5)
    weird = ["", " ", "\t", "٣٥٦٠٠٠٠٠٠٤٩٨٣٧", "73282932000074 ", "7328293200007４", "35600000049837", "35600000000048",
             "2A1234567", "2B0000018", "1850578006048 ", "185057800604836", "1852A78006048", "FRWF12", "12345",
             "A" * 90, "fr7630003017020002010412521", "FR76 3000 3017 0200 0201 0412 521", None, "\u202eRLO", "0"]
    rng = np.random.default_rng(7)
    for i in range(len(base)):
        for col in ("IdTiers", "NatIdTiers", "CatTiers", "NatJur", "Civilite", "IBAN", "BIC", "CodeEtab", "CleRib",
                    "CP", "Nom", "RefTiers", "TitCpte"):
            if rng.random() < 0.3:
                base.loc[i, col] = weird[int(rng.integers(0, len(weird)))]
        if rng.random() < 0.3:
            base.loc[i, "NatIdTiers"] = f"{int(rng.integers(1, 14)):02d}"
    dup = base.iloc[:6].copy()
    dup["IBAN"] = "DE89370400440532013000"
    dup["Nom"] = "AUTRE NOM"
    return pd.concat([base, dup], ignore_index=True)


def test_rows_engine_equals_pandas_on_hostile_values():
    df = _hostile_frame()
    plain = check_frame(df, engine="plain")
    rows = check_frame(df, engine="rows")
    assert KEY(rows) == KEY(plain)
    assert {"TIERS-COHERENCE-BANQUE", "TIERS-COHERENCE-NOM"} <= set(plain.summary["par_regle"])


def test_pes_files_give_the_same_findings_whatever_the_engine(tmp_path):
    data = build_pes([[[[company()], [person(CP="401", Civilite="MLLE")]],
                       [[company(IBAN="FR7630003017020002010412522", BIC="sogefrpp")]]],
                      [[[person(CodeEtab="3000X", Nom="X" * 40)]]]])
    p = tmp_path / "pes.xml"
    p.write_bytes(data)
    a = run_tiers_gate(p, engine="rows")
    b = run_tiers_gate(p, engine="plain")
    assert KEY(a) == KEY(b) and len(a.findings) >= 4
    html = a.to_html()
    assert "SCIERIE DES LANDES" in html or "LABORDE" in html


def test_auto_small_clean_uses_rows_and_faulty_is_stated_by_ge(monkeypatch):
    clean = _rows(synth_tiers_frame(50, defect_rate=0.0, seed=1))
    assert check_rows(clean, engine="auto").summary["moteur"] == "python"
    faulty = _rows(synth_tiers_frame(50, defect_rate=0.5, seed=2))
    auto = check_rows(faulty, engine="auto")
    assert auto.summary["moteur"] == "great_expectations" and not auto.ok
    assert KEY(auto) == KEY(check_rows(faulty, engine="rows"))
    big = _rows(synth_tiers_frame(300, defect_rate=0.0, seed=3))
    monkeypatch.setattr(rowwise, "MAX_ROWS", 299)
    assert check_rows(big, engine="auto").summary["moteur"] == "pandas"
    assert check_rows([], engine="rows").ok
    with pytest.raises(ValueError, match="moteur inconnu"):
        check_rows(clean, engine="excel")


def test_small_validate_never_imports_pandas(tmp_path):
    """`demat validate` of a small clean PES: schema, rules and tiers gate without numpy, pandas
    or Great Expectations in the process."""
    from flows.helios.generate import generate_pes

    p = tmp_path / "petit.xml"
    p.write_bytes(generate_pes(siret="21400293300015", idpost="040012", codcol="293", codbud="01", nomfic="PETIT", seed=1))
    code = textwrap.dedent(f"""
        import json, sys
        from flows.cli import main
        import io, contextlib
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["validate", "--json", {str(p)!r}])
        # the pipeline's path (steps.validate): one pass, the gate on its rows, the HTML and JSON reports
        from flows.helios.validate import validate_pes_with_tiers
        from flows.quality.gate import run_tiers_gate
        report, rows = validate_pes_with_tiers({str(p)!r})
        q = run_tiers_gate({str(p)!r}, engine="auto", rows=rows)
        assert report.ok and q.ok and rows and "<html" in q.to_html() and q.to_json()
        print(json.dumps({{"rc": rc, "mods": sorted(m for m in ("pandas", "numpy", "great_expectations")
                                                        if m in sys.modules)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rc": 0, "mods": []}


# ---------------------------------------------------------------- scalar twins of the checks

TEXT = st.one_of(st.none(), st.text(max_size=30), st.from_regex(r"[0-9]{9,15}", fullmatch=True),
                 st.from_regex(r"[0-9]{5}(2A|2B|[0-9]{2})[0-9]{8}", fullmatch=True),
                 st.from_regex(r"356000000[0-9]{5}", fullmatch=True), st.from_regex(r"2[AB][0-9]{7}", fullmatch=True))


def _vec(fn, *cols):
    return fn(*(pd.Series(list(c), dtype=object) for c in cols)).tolist()


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=20))
def test_identifier_twins(values):
    for scalar, vector in ((rowwise.siret_ok, checks.siret_valid), (rowwise.siren_ok, checks.siren_valid),
                           (rowwise.finess_ok, checks.finess_valid), (rowwise.nir_ok, checks.nir_valid)):
        assert [scalar(v) for v in values] == _vec(vector, values), scalar.__name__


RIB_PART = st.one_of(st.none(), st.text(max_size=12), st.from_regex(r"[0-9A-Za-z]{5}", fullmatch=True),
                     st.from_regex(r"[0-9A-Z]{11}", fullmatch=True), st.from_regex(r"[0-9]{2}", fullmatch=True))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(RIB_PART, RIB_PART, RIB_PART, RIB_PART), min_size=1, max_size=20))
def test_rib_twins(parts):
    cols = list(zip(*parts, strict=True))
    assert [rowwise.rib_format_ok(*p) for p in parts] == _vec(checks.rib_format_valid, *cols)
    assert [rowwise.rib_ok(*p) for p in parts] == _vec(checks.rib_valid, *cols)


def test_rib_and_iban_twins_on_valid_and_mutated_accounts():
    rng = np.random.default_rng(3)
    b, g, c, k = ribs(rng, 200)
    assert [rowwise.rib_ok(*r) for r in zip(b, g, c, k, strict=True)] == _vec(checks.rib_valid, b, g, c, k)
    fr = list(ibans("FR", (b + g + c + k).astype(str)))
    others = []
    from schwifty import registry

    for cc in ("DE", "BE", "ES", "IT", "GB", "NL", "MC", "CH", "PT", "LU", "RE", "GP", "NC"):
        try:
            length = registry.get_iban_spec(cc).iban_length
        except Exception:  # noqa: S112 - a country schwifty does not know: nothing to compare
            continue
        bb = np.array(["".join(map(str, rng.integers(0, 10, length - 4))) for _ in range(5)], dtype=object)
        others += list(ibans(cc, bb))
    values = fr + others + ["GB82WEST12345698765432", "XX82WEST12345698765432", "FR76", "", None, "fr7630003017020002010412521"]
    mutated = [v[:-1] + str((int(v[-1]) + 1) % 10) for v in fr[:50] + others if v[-1].isdigit()]
    allv = values + mutated
    assert [rowwise.iban_ok(v) for v in allv] == _vec(checks.iban_valid, allv)
    assert [rowwise.iban_rib_ok(v) for v in allv] == _vec(checks.iban_rib_valid, allv)
    assert sum(rowwise.iban_ok(v) for v in allv) >= 200  # valid ones are indeed accepted
    assert not any(rowwise.iban_ok(v) for v in mutated)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=40), st.from_regex(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}", fullmatch=True)),
                min_size=1, max_size=15))
def test_iban_twins_on_arbitrary_text(values):
    assert [rowwise.iban_ok(v) for v in values] == _vec(checks.iban_valid, values)
    assert [rowwise.iban_rib_ok(v) for v in values] == _vec(checks.iban_rib_valid, values)


def test_every_declared_rule_has_a_scalar_twin():
    """fails() covers every kind and operator the declarations use (a new kind must get both)."""
    rec = dict.fromkeys(COLUMNS)
    for rule in build_rules():
        assert isinstance(rule.fails(dict(rec, **{c.column: None for c in rule.when}, **{rule.column: None})), bool)
