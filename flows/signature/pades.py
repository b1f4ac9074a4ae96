"""PAdES signature of a PDF acte with the official's certificate (pyHanko).

The signature is embedded in the PDF (an incremental update: the original bytes stay intact and
covered by the ByteRange), so the préfecture and any PDF reader see who signed, in which role,
where and when. Certificate checks are the same as for XAdES: a certificate that is expired or
not meant for signing is refused before anything is produced.
"""

from __future__ import annotations

import io
from pathlib import Path

from flows.signature.certs import check_signing_certificate, load_signer


class PadesError(ValueError):
    """The PDF cannot be signed (unreadable, encrypted...); the message is in French."""


def sign_pdf(pdf: bytes, p12_path: str | Path, password: bytes, *, role: str, place: str | None = None) -> bytes:
    """The PDF with a PAdES (ETSI.CAdES.detached) signature of the certificate's holder."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.sign import signers
    from pyhanko.sign.fields import SigSeedSubFilter

    check_signing_certificate(load_signer(p12_path, password).cert)
    signer = signers.SimpleSigner.load_pkcs12(pfx_file=str(p12_path), passphrase=password)
    if signer is None:
        raise PadesError(f"Certificat illisible : {Path(p12_path).name}")
    holder = signer.signing_cert.subject.native.get("common_name", "")
    meta = signers.PdfSignatureMetadata(
        field_name="SignatureDemat", reason=f"Signature de l'acte ({role})", location=place, name=holder,
        subfilter=SigSeedSubFilter.PADES, md_algorithm="sha256",
    )
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        if writer.prev.encrypted:
            raise PadesError("Le PDF est chiffré : il ne peut pas être signé. Déposez une version non protégée.")
        return signers.sign_pdf(writer, meta, signer=signer).getvalue()
    except PdfError as exc:
        raise PadesError(f"PDF illisible, impossible de le signer : {exc}") from exc
