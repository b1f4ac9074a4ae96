"""The legal stamp of an acknowledged acte, and the readable accusé de réception.

Stamp ("Reçu en préfecture le …", the IDActe, "Publié le …" once published): a NEW artefact, the
signed original stays untouched. The stamp goes on the first page, top right, in an INCREMENTAL
update (pyHanko's IncrementalPdfFileWriter): the bytes a PAdES signature covers are kept as they
are. What is added depends on the PDF:
- signed (PAdES): the stamp is the appearance of a new read-only form field's widget, the one kind
  of addition the difference analysis of validators (pyHanko's, tested; Acrobat's) accepts after
  an approval signature (FORM_FILLING): the stamped copy still validates. A /Stamp annotation or a
  stamp drawn into the page content (pyHanko's TextStamp.apply, a pypdf merge) is reported as a
  forbidden modification after signing (tested for the annotation).
- unsigned: a /Stamp annotation (locked, printed), what a reader shows as a stamp.
The text is drawn with the standard Helvetica in WinAnsiEncoding (no font to embed): French
accents are in that encoding; anything outside it is shown as "?".

The accusé de réception is a one-page PDF written here (a few PDF objects), deterministic: the
same facts give the same bytes, so recording it twice stores it once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date

FONT_SIZE = 9
LEADING = 11
MARGIN = 18


class StampError(ValueError):
    """The PDF cannot be stamped (French message)."""


def _fr(d: date | None) -> str:
    return d.strftime("%d/%m/%Y") if d else "—"


def stamp_lines(idacte: str, received: date, published: date | None = None) -> list[str]:
    lines = [f"Reçu en préfecture le {_fr(received)}", f"IDActe : {idacte}"]
    if published is not None:
        lines.append(f"Publié le {_fr(published)}")
    return lines


def _pdf_text(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _text_ops(lines: list[str], x: float, y_top: float, size: int = FONT_SIZE, leading: int = LEADING,
              bold_first: bool = False) -> bytes:
    out = [b"BT", b"%d TL" % leading, b"%.2f %.2f Td" % (x, y_top)]
    for i, line in enumerate(lines):
        font = b"/F2" if bold_first and i == 0 else b"/F1"
        out.append(font + b" %d Tf" % size)
        out.append(_pdf_text(line) + b" Tj T*")
    out.append(b"ET")
    return b"\n".join(out)


def _width(lines: list[str], size: int = FONT_SIZE) -> float:
    # Helvetica averages ~0.52 em per character: a box slightly wider than the text, never cut
    return max(len(line) for line in lines) * size * 0.56 + 2 * 6


def stamp_pdf(pdf: bytes, lines: list[str]) -> bytes:
    """`pdf` with the stamp on its first page, top right, as an incremental update."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.generic import pdf_name
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError

    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        if writer.prev.encrypted:
            raise StampError("le PDF est chiffré : impossible d'y apposer le tampon")
        page_ref, _ = writer.find_page_for_modification(0)
        page = page_ref.get_object()
        box = page.get("/CropBox") or page.get("/MediaBox") or _inherited(page, "/MediaBox")
        llx, lly, urx, ury = (float(v) for v in box)
    except StampError:
        raise
    except (PdfError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise StampError(f"PDF illisible, tampon impossible ({type(exc).__name__}: {exc})") from exc
    width, height = _width(lines), len(lines) * LEADING + 10
    x1, y1 = urx - MARGIN, ury - MARGIN
    x0, y0 = max(llx, x1 - width), max(lly, y1 - height)
    w, h = x1 - x0, y1 - y0
    fonts = _fonts(generic)
    content = b"q 1 1 1 rg 0.75 0 0 RG 1.2 w 0.6 0.6 %.2f %.2f re B Q\nq 0.55 0 0 rg\n" % (w - 1.2, h - 1.2)
    content += _text_ops(lines, 6, h - 5 - FONT_SIZE, bold_first=True) + b"\nQ"
    appearance = generic.StreamObject({
        pdf_name("/Type"): pdf_name("/XObject"), pdf_name("/Subtype"): pdf_name("/Form"),
        pdf_name("/BBox"): generic.ArrayObject([generic.FloatObject(v) for v in (0, 0, w, h)]),
        pdf_name("/Resources"): generic.DictionaryObject({pdf_name("/Font"): fonts}),
    }, stream_data=content)
    ap = generic.DictionaryObject({pdf_name("/N"): writer.add_object(appearance)})
    if _signed(writer):
        _stamp_field(writer, ap, (x0, y0, x1, y1))
    else:
        annot = generic.DictionaryObject({
            pdf_name("/Type"): pdf_name("/Annot"), pdf_name("/Subtype"): pdf_name("/Stamp"),
            pdf_name("/Rect"): generic.ArrayObject([generic.FloatObject(v) for v in (x0, y0, x1, y1)]),
            pdf_name("/F"): generic.NumberObject(4 | 128),  # printed, locked
            pdf_name("/Name"): pdf_name("/Approved"),
            pdf_name("/Contents"): generic.TextStringObject(" — ".join(lines)),
            pdf_name("/NM"): generic.TextStringObject(FIELD), pdf_name("/AP"): ap, pdf_name("/P"): page_ref,
        })
        writer.register_annotation(page_ref, writer.add_object(annot))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


FIELD = "TamponPrefecture"


def _signed(writer) -> bool:
    form = writer.root.get("/AcroForm")
    fields = form.get_object().get("/Fields", []) if form is not None else []
    return any(f.get_object().get("/FT") == "/Sig" and "/V" in f.get_object() for f in fields)


def _stamp_field(writer, ap, rect) -> None:
    """A signed PDF: the stamp is the appearance of a new, read-only form field's widget, the one
    kind of addition pyHanko's difference analysis (and Acrobat's) accept after an approval
    signature (FORM_FILLING): the signature stays valid. A /Stamp annotation is shown the same
    but pyHanko reports it as a forbidden modification."""
    from pyhanko.pdf_utils.generic import NumberObject, pdf_name
    from pyhanko.sign import fields

    fields.append_signature_field(writer, fields.SigFieldSpec(FIELD, on_page=0, box=tuple(int(v) for v in rect)))
    for ref in writer.root["/AcroForm"]["/Fields"]:
        field = ref.get_object()
        if field.get("/T") == FIELD:
            field[pdf_name("/AP")] = ap
            field[pdf_name("/Ff")] = NumberObject(1)  # read-only
            return
    raise StampError("champ du tampon introuvable après son ajout")


def _inherited(page, key):
    node = page
    while node is not None:
        if key in node:
            return node[key]
        parent = node.get("/Parent")
        node = parent.get_object() if parent is not None else None
    raise KeyError(key)


def _fonts(generic):
    from pyhanko.pdf_utils.generic import pdf_name

    def font(base: str):
        return generic.DictionaryObject({
            pdf_name("/Type"): pdf_name("/Font"), pdf_name("/Subtype"): pdf_name("/Type1"),
            pdf_name("/BaseFont"): pdf_name(base), pdf_name("/Encoding"): pdf_name("/WinAnsiEncoding")})

    return generic.DictionaryObject({pdf_name("/F1"): font("/Helvetica"), pdf_name("/F2"): font("/Helvetica-Bold")})


# --------------------------------------------------------------------------------------------- accusé de réception
@dataclass(frozen=True)
class Receipt:
    collectivite: str
    siren: str
    idacte: str
    nature: str
    objet: str
    numero_interne: str = ""
    date_decision: date | None = None
    date_transmission: date | None = None
    date_reception: date | None = None
    date_publication: date | None = None


def _wrap(text: str, width: int = 88) -> list[str]:
    words, lines, cur = (text or "").split(), [], ""
    for word in words:
        while len(word) > width:
            word, rest = word[:width], word[width:]
            lines.append(word) if not cur else (lines.append(cur), lines.append(word))
            cur, word = "", rest
        if len(cur) + len(word) + 1 > width and cur:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    if cur:
        lines.append(cur)
    return lines or ["—"]


def receipt_pdf(r: Receipt) -> bytes:
    """A one-page A4 accusé de réception, readable and deterministic."""
    rows = [("Collectivité", f"{r.collectivite} (SIREN {r.siren})"), ("Identifiant de l'acte (IDActe)", r.idacte),
            ("Numéro interne", r.numero_interne or "—"), ("Nature", r.nature), ("Date de la décision", _fr(r.date_decision)),
            ("Transmis à la préfecture le", _fr(r.date_transmission)), ("Reçu en préfecture le", _fr(r.date_reception))]
    if r.date_publication is not None:
        rows.append(("Publié le", _fr(r.date_publication)))
    lines = ["Accusé de réception en préfecture", "", *[f"{k} : {v}" for k, v in rows], "", "Objet :",
             *_wrap(r.objet)[:30], "",
             "Le présent accusé atteste la réception de l'acte par le représentant de l'État au titre du contrôle",
             "de légalité (art. L. 2131-1 du code général des collectivités territoriales). Il a été produit par demat",
             "à partir de l'accusé de réception électronique (ARActe) du ministère de l'Intérieur (@ctes)."]
    content = _text_ops(lines, 56, 780, size=10, leading=15, bold_first=True)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title " + _pdf_text(f"Accusé de réception {r.idacte}") + b" /Producer (demat) >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 7 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()
