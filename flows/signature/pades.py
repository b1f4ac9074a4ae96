"""PAdES signature of a PDF acte with the official's certificate (pyHanko).

The signature is embedded in the PDF (an incremental update: the original bytes stay intact and
covered by the ByteRange), so the préfecture and any PDF reader see who signed, in which role,
where and when. Certificate checks are the same as for XAdES: a certificate that is expired or
not meant for signing is refused before anything is produced.
"""

from __future__ import annotations

from pathlib import Path

from flows.signature.certs import check_signing_certificate, load_signer
from flows.signature.remote import PadesError  # noqa: F401 - callers catch it from here


def sign_pdf(pdf: bytes, p12_path: str | Path, password: bytes, *, role: str, place: str | None = None) -> bytes:
    """The PDF with a PAdES (ETSI.CAdES.detached) signature of the certificate's holder.

    One code path with the two-phase signature (flows.signature.remote): prepare for the
    certificate, sign the signed attributes with the PKCS#12 key here, assemble and verify.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from flows.signature.remote import assemble_pdf, prepare_pdf

    signer = load_signer(p12_path, password)
    check_signing_certificate(signer.cert)
    prepared = prepare_pdf(pdf, signer.cert, role=role, place=place, chain=signer.chain)
    if isinstance(signer.key, ec.EllipticCurvePrivateKey):
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(signer.key.sign(prepared.signed_attrs, ec.ECDSA(hashes.SHA256())))
        size = (signer.key.curve.key_size + 7) // 8
        value = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        value = signer.key.sign(prepared.signed_attrs, padding.PKCS1v15(), hashes.SHA256())
    return assemble_pdf(prepared, value)
