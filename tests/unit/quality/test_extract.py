"""Streaming extraction of tiers occurrences from PES_Aller files (generated and hostile)."""

from __future__ import annotations

import pytest

from flows.findings import UnreadableFile
from flows.quality.extract import (
    COLUMNS,
    bank_signatures,
    extract_tiers,
    iter_tiers_rows,
    place_labels,
    tiers_keys,
)

from .pesfactory import build_pes, company, person, single


def write(tmp_path, data: bytes, name="pes.xml"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_one_row_per_occurrence_with_its_place(tmp_path):
    a, b = company(), person()
    data = build_pes([[[[a], [b]], [[a]]], [[[b]]]], exer="2025", first_idbord=41)
    df = extract_tiers(write(tmp_path, data))
    assert list(df.columns) == COLUMNS
    assert len(df) == 4
    assert df[["bordereau", "piece", "ligne"]].values.tolist() == [
        ["41", "1", "1"],
        ["41", "1", "2"],
        ["41", "2", "1"],
        ["42", "1", "1"],
    ]
    assert set(df["flux"]) == {"depense"} and set(df["exercice"]) == {"2025"}
    assert df.loc[0, "IdTiers"] == "73282932000074" and df.loc[1, "Prenom"] == "JEANNE"
    assert df.loc[1, "IdCpte"] == "C7850000000" and df.loc[1, "IBAN"] is None
    assert df["line"].notna().all()
    assert place_labels(df).tolist()[0] == "bordereau 41 (2025) / pièce 1 / ligne 1"


def test_absent_empty_and_blocks(tmp_path):
    t = company(ComplNom="", IBAN=None, BIC=None, TitCpte=None, TypAdr=None, Adr2=None, CP=None, Ville=None, CodRes=None)
    df = extract_tiers(write(tmp_path, single(t)))
    row = df.iloc[0]
    assert row["ComplNom"] == ""  # present with an empty V
    assert row["Prenom"] is None  # absent
    assert row["Adresse"] is None and row["CpteBancaire"] is None


def test_recette_several_tiers_per_ligne(tmp_path):
    data = build_pes([[[[person(), person(RefTiers="P2", Prenom="PAUL")]]]], kind="recette")
    df = extract_tiers(write(tmp_path, data))
    assert df["flux"].tolist() == ["recette", "recette"]
    assert df["position"].tolist() == [1, 2]
    assert df["ligne"].tolist() == ["1", "1"]
    assert place_labels(df).tolist()[1].endswith("/ ligne 1 / tiers 2")


def test_streaming_with_attachments(tmp_path):
    """A file with thousands of lignes and a big PJ is read lazily, row by row."""
    lignes = [[company(RefTiers=f"R{i}")] for i in range(3000)]
    data = build_pes([[lignes[:1500], lignes[1500:]]], pj_bytes=2_000_000)
    path = write(tmp_path, data)
    rows = iter_tiers_rows(path)
    first = next(rows)
    assert first[COLUMNS.index("RefTiers")] == "R0"
    assert sum(1 for _ in rows) == 2999


def test_keys_and_bank_signatures(tmp_path):
    t1 = company()
    t2 = company(IdTiers=None, NatIdTiers=None, RefTiers="X9")
    t3 = person(RefTiers=None, CodeEtab="30001", IdCpte="c7850000000")
    df = extract_tiers(write(tmp_path, build_pes([[[[t1], [t2], [t3]]]])))
    assert tiers_keys(df).tolist() == ["ID:01:73282932000074", "REF:X9", "NOM:LABORDE|40100"]
    assert bank_signatures(df).tolist()[0] == "IBAN FR7630003017020002010412521"
    assert bank_signatures(df).tolist()[2] == "RIB 3000100866C785000000067"


@pytest.mark.parametrize(
    "data, why",
    [
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>', "DOCTYPE"),
        (b"<PES_Retour><Tiers/></PES_Retour>", "PES_Aller"),
        (single(company())[:-40], "bien form"),
        (b"", "vide"),
        (b"not xml at all", "bien form"),
    ],
)
def test_hostile_or_wrong_files_are_unreadable(tmp_path, data, why):
    with pytest.raises(UnreadableFile) as exc:
        extract_tiers(write(tmp_path, data))
    assert why.lower() in str(exc.value).lower()


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableFile):
        extract_tiers(tmp_path / "absent.xml")


def test_size_cap(tmp_path):
    path = write(tmp_path, single(company()))
    with pytest.raises(UnreadableFile, match="taille maximale"):
        extract_tiers(path, max_bytes=100)
