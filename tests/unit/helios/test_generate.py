"""The generator: valid by default, realistic tiers, every named defect really present."""

from __future__ import annotations

import random
import re

import pytest
from schwifty import BIC, IBAN
from stdnum.fr import siret

from flows.helios.generate import DEFECTS, generate_pes, generate_pes_file, make_siret, make_tiers
from flows.helios.reader import Tiers, iter_pes
from flows.helios.validate import validate_pes

from .conftest import make_pes, write


def tiers_of(tmp_path, data: bytes) -> list[Tiers]:
    out = []
    for item in iter_pes(write(tmp_path, data, "t.xml")):
        for ln in getattr(item, "lignes", []):
            out.extend(ln.tiers)
    return out


def test_iso_8859_1_with_accents():
    data = make_pes(n_bordereaux=2, pieces_per_bordereau=6)
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    text = data.decode("iso-8859-1")
    assert re.search(r"[éèêàçôâÉÈ]", text)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really Latin-1 bytes, not UTF-8


def test_deterministic_per_seed():
    assert make_pes(seed=3) == make_pes(seed=3)
    assert make_pes(seed=3) != make_pes(seed=4)


def test_tiers_are_realistic(tmp_path):
    tiers = tiers_of(tmp_path, make_pes(n_bordereaux=2, pieces_per_bordereau=6))
    companies = [t for t in tiers if t.cattiers == "50"]
    persons = [t for t in tiers if t.cattiers == "01"]
    assert companies and persons
    for t in companies:
        assert t.natjur == "03" and t.natidtiers == "01" and siret.is_valid(t.idtiers)
        assert t.civilite is None and t.prenom is None
    for t in persons:
        assert t.natjur == "01" and t.civilite in ("M.", "Mme") and t.prenom
    for t in tiers:
        assert re.fullmatch(r"\d{5}", t.cp) and t.ville and t.adr2 and len(t.nom) <= 38
        IBAN(t.iban)  # raises if the mod-97 key or the French BBAN key is wrong
        BIC(t.bic)
        assert t.iban == t.iban.upper() and t.bic == t.bic.upper() and t.titcpte


def test_make_siret_and_tiers_helpers():
    rng = random.Random(7)
    assert all(siret.is_valid(make_siret(rng)) for _ in range(200))
    tiers = make_tiers(rng, 9)
    assert {t.kind for t in tiers} == {"company", "person"}


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        ("bad_cp", lambda ts: any(len(t.cp) == 4 for t in ts)),
        ("bad_iban", lambda ts: any(not IBAN(t.iban, allow_invalid=True).is_valid for t in ts)),
        ("lowercase_iban", lambda ts: any(t.iban[4:] != t.iban[4:].upper() for t in ts)),
        ("lowercase_bic", lambda ts: any(t.bic and t.bic != t.bic.upper() for t in ts)),
        ("bad_siret_tiers", lambda ts: any(t.idtiers and not siret.is_valid(t.idtiers) for t in ts)),
        ("civilite_on_company", lambda ts: any(t.cattiers == "50" and t.civilite for t in ts)),
        ("missing_civilite", lambda ts: any(t.cattiers == "01" and not (t.civilite and t.prenom) for t in ts)),
    ],
)
@pytest.mark.parametrize("kind", ["depense", "recette"])
def test_tiers_defects_present(tmp_path, defect, check, kind):
    """With the default 2 pièces, the faulty tiers does appear in the file (for the tiers gate)."""
    assert check(tiers_of(tmp_path, make_pes(defects=[defect], kind=kind)))
    assert not check(tiers_of(tmp_path, make_pes(kind=kind)))


def test_every_defect_is_known_and_generates():
    for d in DEFECTS:
        assert make_pes(defects=[d])
    with pytest.raises(ValueError, match="inconnu"):
        make_pes(defects=["pas_un_defaut"])
    with pytest.raises(ValueError):
        make_pes(kind="budget")


def test_custom_tiers_are_used(tmp_path):
    from flows.helios.generate import TiersSpec

    mine = [TiersSpec(kind="public", nom="DÉPARTEMENT DES LANDES", idtiers="22400001800013", cp="40025", ville="MONT-DE-MARSAN")]
    ts = tiers_of(tmp_path, generate_pes(siret="21400293300015", idpost="040012", codcol="293", codbud="01",
                                         nomfic="X", tiers=mine))
    assert {(t.nom, t.cattiers, t.natjur) for t in ts} == {("DÉPARTEMENT DES LANDES", "22", "09")}
    assert all(not t.has_bank for t in ts)


def test_generate_file_streams_to_size(tmp_path):
    path = tmp_path / "big.xml"
    size = generate_pes_file(path, 3_000_000, pieces_per_bordereau=10, max_pj=2)
    assert size == path.stat().st_size
    assert 3_000_000 - 4096 <= size <= 3_000_000 + 200_000
    report = validate_pes(path)
    assert report.ok and not report.findings, report.to_text()
    assert report.summary["pj"] == 2 and report.summary["bordereaux"] > 50
