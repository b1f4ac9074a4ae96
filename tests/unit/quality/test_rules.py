"""Every tiers rule caught on a bad value and silent on good ones, in both engines.

All cases live in ONE generated PES_Aller (one pièce per case) so the file is extracted once and
Great Expectations runs once over it; row i of the frame is case i.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stdnum import luhn
from stdnum.fr import nir

from flows.quality.extract import extract_tiers
from flows.quality.gate import failures_ge
from flows.quality.plain import failures_plain
from flows.quality.rules import build_rules, prepare
from flows.quality.synth import ibans, sirets

from .pesfactory import build_pes, company, person

SIRETS = iter(sirets(np.random.default_rng(42), 500))
FINESS = "33078001" + luhn.calc_check_digit("33078001")
NIR = "295109912611193"
NIR_2 = "187047512345" + "6" + nir.calc_check_digits("1870475123456" + "00")
PUBLIC_SIRET = sirets(np.random.default_rng(7), 1, public=True)[0]
IBAN_BAD_RIB = ibans("FR", np.array(["30001012345678901234500"], dtype=object))[0]
FOREIGN = dict(CP="99999", Ville="10115 BERLIN", CodRes="1", CodPays="109", IBAN="DE89370400440532013000", BIC="DEUTDEFFXXX")
NO_ADDRESS = dict(TypAdr=None, Adr2=None, CP=None, Ville=None, CodRes=None)


def co(**over):
    """A company with its own valid SIRET and reference (so cases never look like one tiers)."""
    t = company(IdTiers=next(SIRETS), **over) if "IdTiers" not in over else company(**over)
    t.setdefault("RefTiers", None)
    return t


REFS = iter(range(1, 10_000))


def pp(**over):
    """A natural person with its own reference."""
    over.setdefault("RefTiers", f"P{next(REFS):04d}")
    return person(**over)


# (expected rule, tiers) — the tiers differs from a valid one by exactly the fault
BAD = [
    ("TIERS-NATIDTIERS-VALEUR", co(NatIdTiers="13")),
    ("TIERS-IDTIERS-ABSENT", co(IdTiers=None)),
    ("TIERS-NATIDTIERS-ABSENT", co(NatIdTiers=None)),
    ("TIERS-SIRET", co(IdTiers="12345678912345")),
    ("TIERS-SIRET", co(IdTiers="7328293200007")),
    ("TIERS-SIRET", co(IdTiers="35600000049838")),
    ("TIERS-SIREN", co(NatIdTiers="02", IdTiers="732829321")),
    ("TIERS-SIREN", co(NatIdTiers="02", IdTiers="73282932000074")),
    ("TIERS-FINESS", co(NatIdTiers="03", IdTiers=FINESS[:-1] + str((int(FINESS[-1]) + 1) % 10), CatTiers="27", NatJur="09")),
    ("TIERS-NIR", pp(NatIdTiers="04", IdTiers="295109912611192")),
    ("TIERS-IDTIERS-FORMAT", co(NatIdTiers="10", IdTiers="XXWF123")),
    ("TIERS-IDTIERS-FORMAT", co(NatIdTiers="08", IdTiers="12345678")),
    ("TIERS-IDTIERS-PERSONNE", co(NatIdTiers="04", IdTiers=NIR_2)),
    ("TIERS-CATTIERS-ABSENT", co(CatTiers=None)),
    ("TIERS-CATTIERS-VALEUR", co(CatTiers="99")),
    ("TIERS-NATJUR-ABSENT", co(NatJur=None)),
    ("TIERS-NATJUR-VALEUR", co(NatJur="12")),
    ("TIERS-CATNAT", co(NatJur="01")),
    ("TIERS-CATNAT", pp(NatJur="09")),
    ("TIERS-CIVILITE-ABSENTE", pp(Civilite=None)),
    ("TIERS-CIVILITE-ABSENTE", pp(Civilite="  ")),
    ("TIERS-CIVILITE-INTERDITE", co(Civilite="M.")),
    ("TIERS-CIVILITE-OBSOLETE", pp(Civilite="Mlle")),
    ("TIERS-CIVILITE-LONGUEUR", pp(Civilite="MONSIEUR LE")),
    ("TIERS-PRENOM-ABSENT", pp(Prenom=None)),
    ("TIERS-PRENOM-INTERDIT", co(Prenom="JEAN")),
    ("TIERS-NOM-ABSENT", co(Nom=None)),
    ("TIERS-NOM-LONGUEUR", co(Nom="N" * 39)),
    ("TIERS-COMPLNOM-LONGUEUR", co(ComplNom="C" * 39)),
    ("TIERS-PRENOM-LONGUEUR", pp(Prenom="P" * 39)),
    ("TIERS-ADRESSE-MANQUANTE", co(**NO_ADDRESS)),
    ("TIERS-ADR2-ABSENTE", co(Adr2=None)),
    ("TIERS-ADR1-LONGUEUR", co(Adr1="A" * 39)),
    ("TIERS-ADR2-LONGUEUR", co(Adr2="A" * 39)),
    ("TIERS-ADR3-LONGUEUR", co(Adr3="A" * 39)),
    ("TIERS-CP-ABSENT", co(CP=None)),
    ("TIERS-CP-FORMAT", co(CP="4000")),
    ("TIERS-CP-FORMAT", co(CP="400000")),
    ("TIERS-CP-FORMAT", co(CP="4000A")),
    ("TIERS-CP-ETRANGER", co(**{**FOREIGN, "CP": "10115"})),
    ("TIERS-VILLE-ABSENTE", co(Ville=None)),
    ("TIERS-VILLE-LONGUEUR", co(Ville="V" * 39)),
    ("TIERS-CODRES-ABSENT", co(CodRes=None)),
    ("TIERS-CODRES-VALEUR", co(CodRes="2")),
    ("TIERS-CODPAYS-ABSENT", co(**{**FOREIGN, "CodPays": None})),
    ("TIERS-CODPAYS-FORMAT", co(**{**FOREIGN, "CodPays": "1090"})),
    ("TIERS-CODPAYS-RESIDENT", co(CodPays="109")),
    ("TIERS-BANQUE-INCOMPLET", co(IBAN=None, BIC=None)),
    ("TIERS-BANQUE-INCOMPLET", pp(CleRib=None)),
    ("TIERS-RIB-FORMAT", pp(CodeGuic="866")),
    ("TIERS-RIB-CLE", pp(CleRib="68")),
    ("TIERS-RIB-CLE", pp(CleRib="00")),
    ("TIERS-IBAN-MAJUSCULES", co(IBAN="fr7630003017020002010412521")),
    ("TIERS-IBAN-INVALIDE", co(IBAN="FR7630003017020002010412522")),
    ("TIERS-IBAN-INVALIDE", co(IBAN="FR76300030170200020104125")),
    ("TIERS-IBAN-CLE-RIB", co(IBAN=IBAN_BAD_RIB)),
    ("TIERS-BIC-MAJUSCULES", co(BIC="sogefrppxxx")),
    ("TIERS-BIC-FORMAT", co(BIC="SOGEFR")),
    ("TIERS-BIC-FORMAT", co(BIC="SOGEFR1PXXX")),
    ("TIERS-BIC-ABSENT", co(**{**FOREIGN, "BIC": None})),
    ("TIERS-TITCPTE-ABSENT", co(TitCpte=None)),
    ("TIERS-TITCPTE-LONGUEUR", co(TitCpte="T" * 33)),
]

GOOD = [
    ("société SIRET + IBAN/BIC", co()),
    ("SIRET FACTS", company()),
    ("établissement La Poste", co(IdTiers="35600000049837", Nom="LA POSTE")),
    ("personne physique RIB avec lettre", pp()),
    ("SIREN", co(NatIdTiers="02", IdTiers="732829320")),
    ("FINESS", co(NatIdTiers="03", IdTiers=FINESS, CatTiers="27", NatJur="09")),
    ("NIR personne physique", pp(NatIdTiers="04", IdTiers=NIR, RefTiers="P-NIR")),
    ("TVA intracommunautaire", co(NatIdTiers="05", IdTiers="DE123456789")),
    ("département 22/09", co(CatTiers="22", NatJur="09", IdTiers=PUBLIC_SIRET)),
    ("non résident", co(**FOREIGN)),
    ("résident CodPays 100", co(CodPays="100")),
    ("nom de 38 caractères", co(Nom="N" * 38, TitCpte="T" * 32)),
    ("sans compte", co(IBAN=None, BIC=None, TitCpte=None)),
    ("IBAN français sans BIC", co(BIC=None)),
    ("BIC 8 caractères", co(BIC="SOGEFRPP")),
    ("CP Corse", co(CP="20000", Ville="AJACCIO")),
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The frame of all cases (BAD then GOOD) and both engines' failures on it."""
    tiers = [t for _, t in BAD] + [t for _, t in GOOD]
    path = tmp_path_factory.mktemp("rules") / "cases.xml"
    path.write_bytes(build_pes([[[[t]] for t in tiers]]))
    df = extract_tiers(path)
    assert len(df) == len(tiers)
    rules = build_rules()
    prepared = prepare(df)
    plain = failures_plain(prepared, rules)
    ge = failures_ge(prepared, rules)
    return df, plain, ge


def _codes(failures: pd.DataFrame, row: int) -> set[str]:
    return set(failures.loc[failures["row"] == row, "rule"])


@pytest.mark.parametrize("i", range(len(BAD)), ids=[f"{c}-{i}" for i, (c, _) in enumerate(BAD)])
def test_bad_value_is_caught(cases, i):
    _, plain, ge = cases
    code = BAD[i][0]
    assert code in _codes(plain, i), f"{code} non détecté (pandas) : {_codes(plain, i)}"
    assert code in _codes(ge, i), f"{code} non détecté (GE) : {_codes(ge, i)}"


@pytest.mark.parametrize("j", range(len(GOOD)), ids=[n for n, _ in GOOD])
def test_good_tiers_raise_nothing(cases, j):
    _, plain, ge = cases
    row = len(BAD) + j
    assert _codes(plain, row) == set()
    assert _codes(ge, row) == set()


def test_every_rule_has_a_bad_case():
    covered = {c for c, _ in BAD}
    covered |= {"TIERS-ADRESSE-ABSENTE", "TIERS-COHERENCE-BANQUE", "TIERS-COHERENCE-NOM"}  # test_gate.py
    assert {r.code for r in build_rules()} <= covered


def test_bad_cases_only_raise_what_they_should(cases):
    """A single fault must not cascade into unrelated blocking findings."""
    _, plain, _ = cases
    allowed_extra = {
        "TIERS-SIRET": {"TIERS-COHERENCE-NOM"},
        "TIERS-CP-ETRANGER": set(),
    }
    for i, (code, _) in enumerate(BAD):
        extra = _codes(plain, i) - {code} - allowed_extra.get(code, set())
        # known legitimate co-occurrences
        extra -= {"TIERS-IDTIERS-PERSONNE"} if code == "TIERS-NATIDTIERS-VALEUR" else set()
        extra -= {"TIERS-IBAN-INVALIDE"} if code == "TIERS-IBAN-MAJUSCULES" else set()
        assert not extra, f"cas {i} ({code}) : constats inattendus {extra}"


def test_engines_agree_on_the_cases(cases):
    _, plain, ge = cases
    a = set(map(tuple, plain[["row", "rule"]].to_numpy().tolist()))
    b = set(map(tuple, ge[["row", "rule"]].to_numpy().tolist()))
    assert a == b
