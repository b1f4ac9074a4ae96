"""Cross-check with the project's PES generator (flows.helios.generate): its clean files pass the
tiers gate and each of its tiers defects is caught by the expected rule."""

from __future__ import annotations

import pytest

from flows.quality.gate import run_tiers_gate

generate = pytest.importorskip("flows.helios.generate")

COMMON = dict(siret="21400293300015", idpost="040012", codcol="293", codbud="01", nomfic="PES_QUALITE")

EXPECTED = {
    "bad_cp": {"TIERS-CP-FORMAT"},
    "bad_iban": {"TIERS-IBAN-INVALIDE"},
    "lowercase_iban": {"TIERS-IBAN-MAJUSCULES"},
    "lowercase_bic": {"TIERS-BIC-MAJUSCULES"},
    "bad_siret_tiers": {"TIERS-SIRET"},
    "civilite_on_company": {"TIERS-CIVILITE-INTERDITE"},
    "missing_civilite": {"TIERS-CIVILITE-ABSENTE", "TIERS-PRENOM-ABSENT"},
}


@pytest.mark.parametrize("kind", ["depense", "recette"])
def test_generated_clean_files_pass(tmp_path, kind):
    path = tmp_path / "pes.xml"
    path.write_bytes(generate.generate_pes(**COMMON, n_bordereaux=2, pieces_per_bordereau=3, lines_per_piece=2, kind=kind))
    result = run_tiers_gate(path, engine="plain")
    assert result.summary["tiers_occurrences"] == 12
    assert result.findings == []


@pytest.mark.parametrize("defect", sorted(EXPECTED))
def test_generator_tiers_defects_are_caught(tmp_path, defect):
    assert defect in generate.DEFECTS
    path = tmp_path / "pes.xml"
    path.write_bytes(generate.generate_pes(**COMMON, pieces_per_bordereau=4, lines_per_piece=2, defects=[defect]))
    result = run_tiers_gate(path, engine="plain")
    assert {f.rule for f in result.findings} == EXPECTED[defect]
    assert not result.ok
