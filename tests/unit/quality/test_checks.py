"""Checksums of the tiers gate: FACTS vectors, the La Poste exception, and the vectorised versions
against python-stdnum / schwifty as oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.fr import nir, siren, siret

from flows.quality import checks
from flows.quality.synth import ibans, ribs, sirets


def vec(fn, *values):
    return fn(*(pd.Series(list(v), dtype=object) for v in values)).tolist()


# ---------------------------------------------------------------- FACTS vectors


@pytest.mark.parametrize(
    "value, ok",
    [("73282932000074", True), ("35600000049837", True), ("12345678912345", False)],
)
def test_facts_siret_vectors(value, ok):
    assert checks.siret_ok(value) is ok
    assert vec(checks.siret_valid, [value]) == [ok]


def test_la_poste_exception_is_a_digit_sum_not_luhn():
    # 35600000049837 fails Luhn but its digit sum (45) is a multiple of 5: valid for La Poste
    assert not luhn.is_valid("35600000049837")
    assert vec(checks.siret_valid, ["35600000049837"]) == [True]
    # same establishment, last digit changed: sum 46, not a multiple of 5
    assert vec(checks.siret_valid, ["35600000049838"]) == [False]
    # the exception is only for SIREN 356000000: another SIREN with a multiple-of-5 sum but bad Luhn
    assert not luhn.is_valid("73282932000070")
    assert vec(checks.siret_valid, ["73282932000070"]) == [False]
    # La Poste head office follows Luhn
    assert vec(checks.siret_valid, ["35600000000048"]) == [siret.is_valid("35600000000048")] == [True]


@pytest.mark.parametrize("bad", ["7328293200007", "732829320000745", "7328293200007A", " 73282932000074", "", None])
def test_siret_format(bad):
    assert vec(checks.siret_valid, [bad]) == [False]
    assert checks.siret_ok(bad) is False


# ---------------------------------------------------------------- vectorised == stdnum


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=14, max_size=14), min_size=1, max_size=30))
def test_siret_vectorised_matches_stdnum(values):
    values = values + ["356000000" + v[9:] for v in values]  # exercise the La Poste branch too
    assert vec(checks.siret_valid, values) == [siret.is_valid(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=9, max_size=9), min_size=1, max_size=30))
def test_siren_vectorised_matches_stdnum(values):
    assert vec(checks.siren_valid, values) == [siren.is_valid(v) for v in values]


def test_generated_sirets_are_valid_for_stdnum():
    values = sirets(np.random.default_rng(3), 200)
    assert all(siret.is_valid(v) for v in values)
    assert all(vec(checks.siret_valid, values))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("12"),
            st.text(alphabet="0123456789", min_size=4, max_size=4),
            st.sampled_from(["01", "2A", "2B", "75", "99", "9A"]),
            st.text(alphabet="0123456789", min_size=6, max_size=6),
            st.integers(0, 99),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_nir_vectorised_matches_stdnum(parts):
    values = []
    for sex, ym, dep, rest, key in parts:
        body = sex + ym + dep + rest
        values.append(body + f"{key:02d}")
        if dep != "9A":
            values.append(body + nir.calc_check_digits(body + "00"))  # the right key
    assert vec(checks.nir_valid, values) == [nir.is_valid(v) for v in values]
    assert [checks.nir_ok(v) for v in values] == [nir.is_valid(v) for v in values]


def test_finess():
    good = "33078001" + luhn.calc_check_digit("33078001")
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert vec(checks.finess_valid, [good, bad, "2A0000012", "3307800", "33078001X"]) == [True, False, True, False, False]
    assert [checks.finess_ok(v) for v in (good, bad, "2A0000012")] == [True, False, True]


# ---------------------------------------------------------------- RIB / IBAN


def test_rib_key_with_letters_in_account():
    # the RIB of the DGFiP sample HELIOS_SIMU_ALR2 (account C7850000000: C counts as 3)
    assert checks.rib_key("30001", "00866", "C7850000000") == 67
    assert vec(checks.rib_valid, ["30001"], ["00866"], ["C7850000000"], ["67"]) == [True]
    assert vec(checks.rib_valid, ["30001"], ["00866"], ["C7850000000"], ["68"]) == [False]
    assert vec(checks.rib_valid, ["30001"], ["866"], ["C7850000000"], ["67"]) == [False]
    assert vec(checks.rib_format_valid, ["30001"], ["866"], ["C7850000000"], ["67"]) == [False]


def test_rib_vectorised_matches_scalar():
    b, g, c, k = ribs(np.random.default_rng(1), 300)
    k = k.copy()
    k[::3] = "00"  # never a valid key
    expected = [checks.rib_ok(*row) for row in zip(b, g, c, k, strict=True)]
    assert vec(checks.rib_valid, b, g, c, k) == expected
    assert sum(expected) == 200


def test_iban_against_schwifty():
    rng = np.random.default_rng(2)
    b, g, c, k = ribs(rng, 50)
    fr = list(ibans("FR", (b + g + c + k).astype(str)))
    de = list(ibans("DE", np.array(["".join(map(str, rng.integers(0, 10, 18))) for _ in range(20)], dtype=object)))
    values = fr + de + ["GB82WEST12345698765432", "BE68539007547034", "XX82WEST12345698765432"]
    mutated = [v[:-1] + str((int(v[-1]) + 1) % 10) for v in values if v[-1].isdigit()]
    lowered = [v.lower() for v in values[:5]]
    spaced = ["FR76 3000 3017 0200 0201 0412 521"]
    allv = values + mutated + lowered + spaced + [None, ""]
    assert vec(checks.iban_valid, allv) == [checks.iban_ok(v) for v in allv]
    assert all(vec(checks.iban_valid, values[:-1]))
    assert not any(vec(checks.iban_valid, mutated + lowered + spaced))


def test_iban_embedded_rib_key():
    bad_key = ibans("FR", np.array(["30001012345678901234500"], dtype=object))[0]  # RIB key 00
    assert checks.iban_ok(bad_key)  # mod 97 fine...
    assert vec(checks.iban_rib_valid, [bad_key, "FR7630003017020002010412521", "DE89370400440532013000"]) == [
        False,
        True,
        True,
    ]
