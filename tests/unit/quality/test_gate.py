"""The tiers gate end to end: file -> Great Expectations -> French findings, JSON and HTML."""

from __future__ import annotations

import json
import socket
from html import escape

import pytest

from flows.findings import UnreadableFile
from flows.quality.gate import QualityResult, check_frame, run_tiers_gate
from flows.quality.plain import check_tiers_plain, failures_plain
from flows.quality.rules import build_rules, prepare
from flows.quality.synth import DEFECTS, synth_tiers_frame

from .pesfactory import build_pes, company, person, single

SAMPLES = [
    "PES_ex.xml",
    "HELIOS_SIMU_ALR2_1496987735_826268894.xml",
    "PESALR2_49101169800000_171227_2045.xml",
    "SHA256_bordereau.xml",
]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> tuple[QualityResult, str]:
    """Two bordereaux: a bad SIRET, a 4-digit CP and a lowercase BIC among good tiers."""
    bad = company(IdTiers="12345678912345", RefTiers="F-BAD", Nom="BOIS & <FILS>", CP="4000", BIC="sogefrppxxx")
    data = build_pes([[[[company()]], [[bad]]], [[[person()], [bad]]]], exer="2026", first_idbord=7)
    path = tmp_path_factory.mktemp("gate") / "faulty.xml"
    path.write_bytes(data)
    return run_tiers_gate(path), str(path)


def test_blocking_findings_with_french_place_value_and_fix(faulty):
    result, _ = faulty
    assert not result.ok
    siret = [f for f in result.findings if f.rule == "TIERS-SIRET"]
    assert [f.place for f in siret] == ["bordereau 7 (2026) / pièce 2 / ligne 1", "bordereau 8 (2026) / pièce 1 / ligne 2"]
    f = siret[0]
    assert f.value == "12345678912345" and f.severity == "error" and f.layer == "qualite"
    assert "SIRET" in f.message and "invalide" in f.message
    assert "SIRENE" in f.fix or "annuaire" in f.fix
    assert f.line and f.line > 1
    codes = {f.rule for f in result.findings}
    assert {"TIERS-SIRET", "TIERS-CP-FORMAT", "TIERS-BIC-MAJUSCULES"} <= codes
    s = result.summary
    assert s["tiers_occurrences"] == 4 and s["tiers_a_corriger"] == 1
    assert s["bordereaux_touches"] == ["7", "8"]
    assert s["par_regle"]["TIERS-SIRET"] == 2 and s["moteur"] == "great_expectations"


def test_json_round_trip(faulty):
    result, path = faulty
    doc = json.loads(result.to_json())
    assert doc["valid"] is False and doc["file"] == path
    assert {f["rule"] for f in doc["findings"]} >= {"TIERS-SIRET"}
    assert doc["summary"]["erreurs_bloquantes"] == len(result.errors)
    assert result.to_report().ok is False


def test_html_groups_by_tiers_in_french(faulty):
    result, _ = faulty
    html = result.to_html()
    assert html.startswith("<!DOCTYPE html>") and 'lang="fr"' in html
    assert "Envoi à Hélios déconseillé" in html
    assert "BOIS &amp; &lt;FILS&gt;" in html and "<FILS>" not in html  # escaped, one card for the tiers
    assert html.count("<section") == 1  # only the faulty tiers gets a card
    assert "Bloquant" in html
    for f in result.findings:
        assert escape(f.fix) in html and escape(f.message) in html
    assert "Saisir le BIC en majuscules." in html
    assert "bordereau 8 (2026) / pièce 1 / ligne 2" in html
    assert "<script" not in html and "http" not in html.split("</style>")[0]  # self-contained


def test_clean_file_passes(tmp_path):
    path = tmp_path / "clean.xml"
    path.write_bytes(build_pes([[[[company()], [person()]]]]))
    result = run_tiers_gate(path)
    assert result.ok and result.findings == []
    assert "peut être envoyé" in result.to_html()


def test_same_tiers_with_two_bank_accounts_is_a_warning(tmp_path):
    other = company(IBAN="DE89370400440532013000", BIC="COBADEFFXXX")
    path = tmp_path / "coherence.xml"
    path.write_bytes(build_pes([[[[company()], [other], [company()]]]]))
    result = run_tiers_gate(path)
    warns = [f for f in result.findings if f.rule == "TIERS-COHERENCE-BANQUE"]
    assert len(warns) == 3 and all(f.severity == "warning" for f in warns)
    assert {f.value for f in warns} == {"IBAN FR7630003017020002010412521", "IBAN DE89370400440532013000"}
    assert result.ok  # a warning does not block
    assert "Avertissement" in result.to_html()


def test_same_identifier_with_two_names_is_a_warning(tmp_path):
    path = tmp_path / "noms.xml"
    path.write_bytes(build_pes([[[[company()], [company(Nom="AUTRE NOM")]]]]))
    result = run_tiers_gate(path, engine="plain")
    assert [f.rule for f in result.findings] == ["TIERS-COHERENCE-NOM", "TIERS-COHERENCE-NOM"]


def test_recette_debtor_without_address_blocks(tmp_path):
    no_adr = person(TypAdr=None, Adr2=None, CP=None, Ville=None, CodRes=None)
    path = tmp_path / "recette.xml"
    path.write_bytes(build_pes([[[[person(), no_adr]]]], kind="recette"))
    result = run_tiers_gate(path, engine="plain")
    assert [(f.rule, f.place) for f in result.findings] == [
        ("TIERS-ADRESSE-ABSENTE", "bordereau 1 (2026) / pièce 1 / ligne 1 / tiers 2")
    ]
    assert not result.ok


def test_ge_and_plain_give_the_same_failures_on_many_defects():
    df = synth_tiers_frame(6000, defect_rate=0.4, seed=11)
    ge = check_frame(df, engine="ge")
    plain = check_frame(df, engine="plain")
    key = lambda r: [(f.rule, f.place, f.value, f.severity) for f in r.findings]  # noqa: E731
    assert key(ge) == key(plain)
    seen = set(ge.summary["par_regle"])
    assert len(seen) >= 15 and len(ge.findings) > 1000
    assert len(DEFECTS) >= 15
    # the plain API exposes the same failures as a frame
    frame = check_tiers_plain(df)
    assert len(frame) == len(plain.findings)
    assert set(frame.columns) >= {"row", "rule", "severity", "column", "value"}


def test_gate_offline_and_writes_nothing(tmp_path, monkeypatch):
    """GE must neither call the network nor create files (gx/ folders, stores) where it runs."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    pes = tmp_path / "pes.xml"
    pes.write_bytes(single(company(CP="123")))
    monkeypatch.chdir(workdir)

    def no_network(*args, **kwargs):
        raise AssertionError(f"accès réseau interdit : {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    result = run_tiers_gate(pes)
    assert [f.rule for f in result.findings] == ["TIERS-CP-FORMAT"]
    assert list(workdir.iterdir()) == []


def test_unreadable_file(tmp_path):
    path = tmp_path / "acquit.xml"
    path.write_bytes(b'<?xml version="1.0"?><PES_ACQUIT/>')
    with pytest.raises(UnreadableFile):
        run_tiers_gate(path)


def test_empty_frame():
    result = check_frame(synth_tiers_frame(1).iloc[:0], engine="ge")
    assert result.ok and result.summary["tiers_occurrences"] == 0
    assert "peut être envoyé" in result.to_html()


def test_real_samples_go_through_the_gate(reference, capsys):
    """DGFiP/Pastell samples: read and checked without crashing; what they report is printed."""
    samples = reference / "helios" / "samples"
    reports = {}
    for name in SAMPLES:
        result = run_tiers_gate(samples / name)
        assert result.summary["tiers_occurrences"] == 1
        reports[name] = [(f.rule, f.value) for f in result.findings]
        assert result.to_html() and json.loads(result.to_json())
    with capsys.disabled():
        print("\ncontrôle des tiers sur les échantillons :", reports)
    # what they report today: all four carry well-formed tiers (SIRET 37909534200018 valid,
    # RIB 30001 00866 C7850000000 67 valid with the letter conversion)
    assert all(v == [] for v in reports.values())


def test_rules_catalogue_is_french_and_complete():
    rules = build_rules()
    assert len({r.code for r in rules}) == len(rules)
    for r in rules:
        assert r.message and r.fix and r.severity in ("blocking", "warning")
    prepared = prepare(synth_tiers_frame(50, defect_rate=0))
    assert failures_plain(prepared, rules).empty


def test_editable_data_and_severity_overrides():
    from flows.quality.rules import load_catjur_pairs, load_params

    pairs = load_catjur_pairs()
    assert {"01/01", "50/03", "22/09"} <= pairs and "50/01" not in pairs
    params = {**load_params(), "severites": {"TIERS-CP-FORMAT": "warning", "TIERS-NOM-LONGUEUR": "off"}}
    rules = {r.code: r for r in build_rules(params)}
    assert rules["TIERS-CP-FORMAT"].severity == "warning"
    assert "TIERS-NOM-LONGUEUR" not in rules
    df = synth_tiers_frame(10, defect_rate=0)
    df.loc[0, "CP"] = "4000"
    result = check_frame(df, engine="plain", rules=list(rules.values()))
    assert result.ok and [f.rule for f in result.findings] == ["TIERS-CP-FORMAT"]


def test_auto_engine_calls_ge_only_when_pandas_finds_something():
    """A clean file is passed by pandas alone (GE is never imported in that process); a faulty one
    is stated by Great Expectations, with exactly the findings the "ge" engine gives."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import json, sys
        from flows.quality.gate import check_frame
        from flows.quality.synth import synth_tiers_frame
        clean = check_frame(synth_tiers_frame(3000, defect_rate=0.0, seed=3), engine="auto")
        print(json.dumps({"ok": clean.ok, "findings": len(clean.findings), "moteur": clean.summary["moteur"],
                          "ge_imported": "great_expectations" in sys.modules}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "ok": True, "findings": 0, "moteur": "pandas", "ge_imported": False}

    faulty = synth_tiers_frame(3000, defect_rate=0.3, seed=4)
    auto = check_frame(faulty, engine="auto")
    ge = check_frame(faulty, engine="ge")
    key = lambda r: [(f.rule, f.place, f.value, f.severity) for f in r.findings]  # noqa: E731
    assert auto.summary["moteur"] == "great_expectations" and not auto.ok
    assert key(auto) == key(ge) and len(ge.findings) > 100
    with pytest.raises(ValueError, match="moteur inconnu"):
        check_frame(faulty, engine="excel")
