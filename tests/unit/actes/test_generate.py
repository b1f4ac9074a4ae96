"""The generator makes real PDFs and well-formed ZIPs; unknown defects are refused."""

from __future__ import annotations

import io
import zipfile

import pytest
from pypdf import PdfReader

from flows.actes.generate import DEFECTS, generate_acte_zip
from flows.actes.pdf import encrypt_pdf, minimal_pdf


def test_minimal_pdf_is_real():
    data = minimal_pdf("Délibération n° 12 (budget)", "Seconde ligne")
    reader = PdfReader(io.BytesIO(data), strict=True)
    assert len(reader.pages) == 1
    assert "Délibération n° 12 (budget)" in reader.pages[0].extract_text()
    assert not reader.is_encrypted
    assert PdfReader(io.BytesIO(encrypt_pdf(data))).is_encrypted


def test_zip_content(collectivite):
    data = generate_acte_zip(collectivite=collectivite, numero="DEL1", n_annexes=2, metadata_format="json")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["acte_DEL1.pdf", "annexe_1.pdf", "annexe_2.pdf", "acte.json"]
        text = PdfReader(io.BytesIO(zf.read("acte_DEL1.pdf"))).pages[0].extract_text()
        assert "Commune de Saint-Sever" in text and "DEL1" in text


def test_unknown_defect_and_format():
    with pytest.raises(ValueError, match="inconnu"):
        generate_acte_zip(numero="X", defects=["nope"])
    with pytest.raises(ValueError):
        generate_acte_zip(numero="X", metadata_format="yaml")
    assert "encrypted_pdf" in DEFECTS and "future_date" in DEFECTS
