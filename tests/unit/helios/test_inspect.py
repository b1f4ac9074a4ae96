"""inspect_pes and its French rendering."""

from __future__ import annotations

import pytest

from flows.findings import UnreadableFile
from flows.helios.inspect import format_inspection, inspect_pes

from .conftest import COLL, make_pes, write


def test_inspect_generated(tmp_path):
    data = make_pes(n_bordereaux=3, pieces_per_bordereau=4, lines_per_piece=2)
    data = data.replace(b"  </Bordereau>", b"  <ds:Signature><ds:SignedInfo/></ds:Signature>\n  </Bordereau>", 1)
    info = inspect_pes(write(tmp_path, data))
    assert info["nomfic"] == "PES_TEST_0001"
    assert info["collectivite"] == {"idcoll": COLL["siret"], "idpost": COLL["idpost"], "codcol": COLL["codcol"], "libelle": "BUDGET PRINCIPAL"}
    assert info["budget"]["codbud"] == COLL["codbud"]
    assert (info["bordereaux"], info["pieces"], info["lignes"], info["tiers"]) == (3, 12, 24, 24)
    assert 1 < info["tiers_distincts"] <= 12
    assert info["signatures"] == {"bordereaux_signes": 1, "signature_globale": False, "signe": True}
    assert [b["signe"] for b in info["detail_bordereaux"]] == [True, False, False]
    assert sum(float(b["montant_lignes"]) for b in info["detail_bordereaux"]) == pytest.approx(float(info["montant_total"]))
    text = format_inspection(info)
    for expected in (
        "Collectivité : SIRET 21400293300015",
        "Budget : 01 (BUDGET PRINCIPAL)",
        "Bordereaux : 3 — pièces : 12 — lignes : 24",
        "Tiers : 24 occurrence(s)",
        "Signatures : 1 bordereau(x) signé(s) sur 3",
        "bordereau 1 (mandats, exercice 2026, type 01",
        " €",
    ):
        assert expected in text, text


def test_inspect_real_sample(samples):
    info = inspect_pes(samples / "PES_ex.xml")
    assert info["collectivite"]["idcoll"] == "24310063300011" and info["montant_total"] == "55.22"
    text = format_inspection(info)
    assert "55,22 €" in text and "dépense" in text and "Signatures : 0 bordereau(x) signé(s) sur 1" in text


def test_amount_formatting(tmp_path):
    import re

    data = make_pes(pieces_per_bordereau=1).decode("iso-8859-1")
    data = re.sub(r'<MtHT V="[^"]*"/>', '<MtHT V="1234567.50"/>', data)
    text = format_inspection(inspect_pes(write(tmp_path, data.encode("iso-8859-1"))))
    assert "1 234 567,50 €" in text


def test_inspect_refuses_non_pes(tmp_path):
    with pytest.raises(UnreadableFile):
        inspect_pes(tmp_path / "absent.xml")
    with pytest.raises(UnreadableFile):
        inspect_pes(write(tmp_path, b'<?xml version="1.0"?><autre/>'))
