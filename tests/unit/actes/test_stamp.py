"""The stamped acte (incremental update, PAdES signature still valid) and the accusé de réception PDF."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader

from flows.actes.pdf import encrypt_pdf, minimal_pdf
from flows.actes.stamp import Receipt, StampError, receipt_pdf, stamp_lines, stamp_pdf

IDACTE = "040-212400011-20261207-DEL2026-12-DE"


def _annotation_texts(data: bytes) -> list[str]:
    page = PdfReader(io.BytesIO(data)).pages[0]
    out = []
    for ref in page.get("/Annots", []):
        annot = ref.get_object()
        if "/AP" not in annot:  # the (invisible) signature's own widget
            continue
        ap = annot["/AP"]["/N"].get_object().get_data()
        out.append(ap.decode("cp1252"))
    return out


def test_unsigned_acte_gets_a_stamp_annotation_the_original_untouched():
    original = minimal_pdf("Délibération n° 12 (budget)")
    stamped = stamp_pdf(original, stamp_lines(IDACTE, date(2026, 12, 7), date(2026, 12, 9)))
    assert stamped.startswith(original)  # incremental: every original byte kept
    assert PdfReader(io.BytesIO(stamped)).pages[0].extract_text() == PdfReader(io.BytesIO(original)).pages[0].extract_text()
    [ap] = _annotation_texts(stamped)
    assert "(Reçu en préfecture le 07/12/2026)" in ap and f"(IDActe : {IDACTE})" in ap and "(Publié le 09/12/2026)" in ap
    annot = PdfReader(io.BytesIO(stamped)).pages[0]["/Annots"][0].get_object()
    assert annot["/Subtype"] == "/Stamp" and "IDActe" in annot["/Contents"]
    assert "Publié" not in _annotation_texts(stamp_pdf(original, stamp_lines(IDACTE, date(2026, 12, 7))))[0]


def test_pades_signature_stays_valid_after_the_stamp(tmp_path):
    from pyhanko.keys import load_cert_from_pemder
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    from flows.signature.pades import sign_pdf
    from flows.signature.pki import create_demo_pki

    pki = create_demo_pki(tmp_path, [("maire", "Jeanne Maire", "Maire")], ca_key_size=2048)
    official = pki["officials"]["maire"]
    signed = sign_pdf(minimal_pdf("Arrêté"), official["p12"], Path(official["password_file"]).read_bytes().strip(),
                      role="Maire")
    stamped = stamp_pdf(signed, stamp_lines(IDACTE, date(2026, 12, 7)))
    assert stamped.startswith(signed) and stamped != signed
    vc = ValidationContext(trust_roots=[load_cert_from_pemder(pki["ca"])])
    status = validate_pdf_signature(PdfFileReader(io.BytesIO(stamped)).embedded_signatures[0], vc)
    assert status.intact and status.valid and status.docmdp_ok and status.bottom_line
    assert any("IDActe" in t for t in _annotation_texts(stamped))

    # the control: the same stamp as a plain annotation breaks the validators' verdict
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    import flows.actes.stamp as S
    original = S._signed
    try:
        S._signed = lambda writer: False
        as_annotation = stamp_pdf(signed, stamp_lines(IDACTE, date(2026, 12, 7)))
    finally:
        S._signed = original
    bad = validate_pdf_signature(PdfFileReader(io.BytesIO(as_annotation)).embedded_signatures[0], vc)
    assert bad.intact and not bad.bottom_line
    assert IncrementalPdfFileWriter  # imported above: the writer the stamp uses


@pytest.mark.parametrize("data", [b"", b"not a pdf at all", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF",
                                  minimal_pdf("x")[:200]])
def test_broken_pdfs_are_refused_in_french(data):
    with pytest.raises(StampError, match="PDF"):
        stamp_pdf(data, stamp_lines(IDACTE, date(2026, 12, 7)))


def test_encrypted_pdf_is_refused():
    with pytest.raises(StampError, match="chiffré|illisible"):
        stamp_pdf(encrypt_pdf(minimal_pdf("x")), stamp_lines(IDACTE, date(2026, 12, 7)))


def test_receipt_is_readable_and_deterministic():
    r = Receipt(collectivite="Commune de Saint-Sever", siren="214002770", idacte=IDACTE, nature="Délibération",
                objet="Budget (primitif) 2027 \\ vote des taux " + "très long objet " * 20, numero_interne="DEL2026-12",
                date_decision=date(2026, 12, 1), date_transmission=date(2026, 12, 6), date_reception=date(2026, 12, 7))
    data = receipt_pdf(r)
    assert data == receipt_pdf(r)
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    for expected in ("Accusé de réception en préfecture", IDACTE, "Commune de Saint-Sever", "214002770",
                     "Délibération", "Budget (primitif) 2027 \\ vote des taux", "Reçu en préfecture le : 07/12/2026",
                     "Transmis à la préfecture le : 06/12/2026"):
        assert expected in text, expected
    assert "Publié" not in text
    published = receipt_pdf(Receipt(**{**r.__dict__, "date_publication": date(2026, 12, 9)}))
    assert "Publié le : 09/12/2026" in PdfReader(io.BytesIO(published)).pages[0].extract_text()
