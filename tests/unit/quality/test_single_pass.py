"""The validator's streaming pass collects the tiers rows the gate checks (the PES is read once):
the rows must be exactly those of the gate's own reader, and the gate's verdicts the same."""

from __future__ import annotations

import pytest

from flows.findings import UnreadableFile
from flows.helios.generate import DEFECTS, generate_pes
from flows.helios.validate import validate_pes, validate_pes_with_tiers
from flows.quality.extract import iter_tiers_rows
from flows.quality.gate import run_tiers_gate

from .pesfactory import build_pes, company, person

SIRET = "21400192000016"
TIERS_DEFECTS = sorted(d for d in DEFECTS if d not in ("doctype", "utf8_declared_latin1", "wrong_namespace"))


def _files(tmp_path):
    out = {
        "depense": build_pes([[[[company()], [person()]], [[company(IBAN="FR76300030170200020104125")]]],
                              [[[person(CP="4010", Civilite="MLLE")]]]], first_idbord=7),
        "recette": build_pes([[[[person(), person(RefTiers="P2", Prenom="PAUL", CodeEtab="3000X")]]]], kind="recette"),
        "sans_tiers": build_pes([[[[]]]]),
    }
    for kind in ("depense", "recette"):
        out[f"gen_{kind}"] = generate_pes(siret=SIRET, idpost="040000", codcol="001", codbud="01", nomfic=f"N{kind}",
                                          n_bordereaux=3, pieces_per_bordereau=4, lines_per_piece=2, kind=kind, seed=5)
    for d in TIERS_DEFECTS:
        out[f"defaut_{d}"] = generate_pes(siret=SIRET, idpost="040000", codcol="001", codbud="01", nomfic=f"D{d}",
                                          n_bordereaux=2, defects=(d,), seed=2)
    paths = {}
    for name, data in out.items():
        p = tmp_path / f"{name}.xml"
        p.write_bytes(data)
        paths[name] = p
    return paths


def test_single_pass_rows_equal_the_gate_reader(tmp_path):
    paths = _files(tmp_path)
    for name, path in paths.items():
        report, rows = validate_pes_with_tiers(path)
        assert rows is not None, name
        assert rows == list(iter_tiers_rows(path)), name
        # the report is the one validate_pes gives
        assert report.to_json() == validate_pes(path).to_json(), name
    _, rows = validate_pes_with_tiers(paths["recette"])
    assert [r[3] for r in rows] == ["1", "1"] and [r[5] for r in rows] == [1, 2]  # pièce named, positions
    assert validate_pes_with_tiers(paths["sans_tiers"])[1] == []
    assert len(validate_pes_with_tiers(paths["depense"])[1]) == 4


def test_gate_on_collected_rows_gives_the_same_findings(tmp_path):
    paths = _files(tmp_path)
    seen_faults = 0
    for name, path in paths.items():
        _, rows = validate_pes_with_tiers(path)
        a = run_tiers_gate(path, engine="plain", rows=rows)
        b = run_tiers_gate(path, engine="plain")
        assert a.findings == b.findings, name
        seen_faults += len(a.findings)
    assert seen_faults > 0  # the corpus does exercise the rules


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>',
    b'<?xml version="1.0" encoding="ISO-8859-1"?><n:PES_Aller xmlns:n="urn:x"><Enveloppe>',
    b'<?xml version="1.0"?><Autre/>',
])
def test_no_rows_when_the_pass_did_not_read_a_whole_pes(tmp_path, data):
    """Refused, truncated or foreign files give no rows: the gate then reads the file itself and
    refuses it as before (never a silent 'no tiers, all good')."""
    p = tmp_path / "x.xml"
    p.write_bytes(data)
    report, rows = validate_pes_with_tiers(p)
    assert rows is None
    assert not report.ok
    with pytest.raises(UnreadableFile):
        run_tiers_gate(p, engine="plain", rows=rows)
