"""Two-phase signature: demat prepares, the signer's token signs digests, demat assembles and verifies.

The private key never reaches the platform. Once the signer's certificate is known:

1. `prepare_pes` / `prepare_pdf` build what is to be signed (per bordereau the XAdES-EPES
   SignedInfo; for a PDF the PAdES CMS signed attributes) and return a prepared state that is
   JSON-serialisable, so it is stored durably and survives a restart;
2. `make_batch` turns prepared documents into digests for the signing agent (one PIN entry for
   the whole batch); the agent answers with raw signature values (RSA PKCS#1 v1.5, or ECDSA r||s);
3. `assemble_pes` / `assemble_pdf` check every value against the certificate's public key and
   produce the signed documents; a value that does not verify is refused, naming the document.

Raw value convention: what PKCS#11 returns (CKM_RSA_PKCS over the DigestInfo, CKM_ECDSA over
the digest), so the agent needs no knowledge of XML or PDF.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from signxml.algorithms import SignatureMethod

from flows.signature.certs import CertificateRefused, common_name
from flows.signature.detached import (
    DETACHED_FORMAT,
    PreparedDetached,
    assemble_detached,
    check_detached_value,
    prepare_detached,
)
from flows.signature.dsig import verify_bytes
from flows.signature.trust import ExpectedSigner, TrustConfig, check_signer, fingerprint
from flows.signature.xades import (
    PreparedBordereau,
    PreparedPes,
    RemoteSignatureRefused,
    _load_cert,
    assemble_pes,
    check_signature_values,
    prepare_pes,
    prepared_state_dict,
)

__all__ = [
    "BATCH_FORMAT",
    "SIGNATURES_FORMAT",
    "CertificateRefused",
    "ExpectedSigner",
    "PreparedBordereau",
    "PreparedDetached",
    "PreparedPdf",
    "PreparedPes",
    "RemoteSignatureRefused",
    "TrustConfig",
    "apply_signatures",
    "assemble_detached",
    "assemble_pdf",
    "assemble_pes",
    "check_pdf_signature_value",
    "check_signature_values",
    "load_prepared",
    "make_batch",
    "prepare_detached",
    "prepare_pdf",
    "prepare_pes",
]

BATCH_FORMAT = "demat-batch/1"
SIGNATURES_FORMAT = "demat-signatures/1"
_PDF_FORMAT = "demat-prepared-pdf/1"


class PadesError(ValueError):
    """The PDF cannot be signed (unreadable, encrypted...); the message is in French."""


# --- PDF (PAdES, pyHanko interrupted signing) -------------------------------------------------------


@dataclass
class PreparedPdf:
    """Phase 1 of a PAdES signature: the PDF with its reserved /Contents and the CMS signed attributes.

    `prepared_pdf` is the incremental update already written (ByteRange fixed); only the CMS is
    missing. Signed attributes hold the ByteRange digest and the signing certificate (ESS).
    """

    document_sha256: str
    certificate: bytes  # DER
    chain: list[bytes]  # DER, issuer certificates embedded in the CMS
    prepared_pdf: bytes
    document_digest: bytes
    reserved_start: int
    reserved_end: int
    signed_attrs: bytes  # DER of the CMS SignedAttributes (SET OF)
    md_algorithm: str = "sha256"
    name: str = "document.pdf"

    kind = "pdf"

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate)

    @property
    def digest_algorithm(self) -> str:
        return self.md_algorithm

    def to_be_signed(self) -> dict[str, bytes]:
        return {"pdf": self.signed_attrs}

    def digests(self) -> dict[str, bytes]:
        return {"pdf": hashlib.new(self.md_algorithm, self.signed_attrs).digest()}

    def to_dict(self) -> dict:
        b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
        return {
            "format": _PDF_FORMAT,
            "document_sha256": self.document_sha256,
            "certificate": b64(self.certificate),
            "chain": [b64(c) for c in self.chain],
            "prepared_pdf": b64(self.prepared_pdf),
            "document_digest": b64(self.document_digest),
            "reserved_start": self.reserved_start,
            "reserved_end": self.reserved_end,
            "signed_attrs": b64(self.signed_attrs),
            "md_algorithm": self.md_algorithm,
            "name": self.name,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> PreparedPdf:
        try:
            if data.get("format") != _PDF_FORMAT:
                raise ValueError("format")
            d = lambda k: base64.b64decode(data[k], validate=True)  # noqa: E731
            prepared = cls(
                document_sha256=str(data["document_sha256"]), certificate=d("certificate"),
                chain=[base64.b64decode(c, validate=True) for c in data["chain"]], prepared_pdf=d("prepared_pdf"),
                document_digest=d("document_digest"), reserved_start=int(data["reserved_start"]),
                reserved_end=int(data["reserved_end"]), signed_attrs=d("signed_attrs"),
                md_algorithm=str(data["md_algorithm"]), name=str(data.get("name") or "document.pdf"),
            )
            x509.load_der_x509_certificate(prepared.certificate)
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteSignatureRefused(
                f"État de signature PDF préparé illisible ({type(exc).__name__}) : préparez de nouveau la signature."
            ) from None
        if prepared.md_algorithm not in ("sha256", "sha384", "sha512"):
            raise RemoteSignatureRefused("État de signature PDF préparé incohérent (algorithme d'empreinte inconnu).")
        if not (0 < prepared.reserved_start < prepared.reserved_end <= len(prepared.prepared_pdf)):
            raise RemoteSignatureRefused("État de signature PDF préparé incohérent (zone réservée hors du document).")
        return prepared

    @classmethod
    def from_json(cls, text: str | bytes) -> PreparedPdf:
        return cls.from_dict(prepared_state_dict(text, "État de signature PDF préparé"))


def _run(coro):
    """pyHanko is async: run here, or in a worker thread when the caller already runs an event loop
    (an async API endpoint), where asyncio.run would refuse."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _asn1(cert: x509.Certificate):
    from asn1crypto import x509 as asn1_x509

    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _placeholder_size(cert: x509.Certificate) -> int:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return (key.key_size + 7) // 8
    if isinstance(key, ec.EllipticCurvePublicKey):
        return 2 * ((key.curve.key_size + 7) // 8) + 9  # DER SEQUENCE of two INTEGERs, worst case
    raise CertificateRefused("Type de clé non pris en charge pour la signature PDF (RSA ou ECDSA attendu).")


def _mechanism(cert: x509.Certificate, md: str):
    from asn1crypto import algos

    kind = "ecdsa" if isinstance(cert.public_key(), ec.EllipticCurvePublicKey) else "rsa"
    return algos.SignedDigestAlgorithm({"algorithm": f"{md}_{kind}"})


def prepare_pdf(
    pdf: bytes,
    signer_cert: x509.Certificate | bytes,
    *,
    role: str,
    place: str | None = None,
    chain: list[x509.Certificate] = (),
    name: str = "document.pdf",
    signing_time: datetime | None = None,
    trust: TrustConfig | None = None,
    expected: ExpectedSigner | None = None,
    field_name: str = "SignatureDemat",
) -> PreparedPdf:
    """Phase 1 of a PAdES signature (pyHanko interrupted signing) for a known certificate."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.sign import signers
    from pyhanko.sign.fields import SigSeedSubFilter
    from pyhanko_certvalidator.registry import SimpleCertificateStore


    cert = signer_cert if isinstance(signer_cert, x509.Certificate) else _load_cert(signer_cert)
    when = (signing_time or datetime.now(UTC)).astimezone(UTC)
    found_chain = check_signer(cert, trust, at=when, expected=expected, intermediates=chain)
    chain = list(chain) or found_chain[1:]
    holder = common_name(cert)
    meta = signers.PdfSignatureMetadata(
        field_name=field_name, reason=f"Signature de l'acte ({role})", location=place, name=holder,
        subfilter=SigSeedSubFilter.PADES, md_algorithm="sha256",
    )
    registry = SimpleCertificateStore.from_certs([_asn1(c) for c in chain])
    ext = signers.ExternalSigner(_asn1(cert), registry, signature_value=_placeholder_size(cert),
                                 signature_mechanism=_mechanism(cert, "sha256"))

    async def run():
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        if writer.prev.encrypted:
            raise PadesError("Le PDF est chiffré : il ne peut pas être signé. Déposez une version non protégée.")
        pdf_signer = signers.PdfSigner(meta, signer=ext)
        prep, tbs, output = await pdf_signer.async_digest_doc_for_signing(writer)
        attrs = await ext.signed_attrs(prep.document_digest, tbs.md_algorithm, use_pades=True)
        return prep, tbs.md_algorithm, attrs, output

    try:
        prep, md, attrs, output = _run(run())
    except PdfError as exc:
        raise PadesError(f"PDF illisible, impossible de préparer sa signature : {exc}") from None
    return PreparedPdf(
        document_sha256=hashlib.sha256(pdf).hexdigest(),
        certificate=cert.public_bytes(serialization.Encoding.DER),
        chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
        prepared_pdf=output.getvalue(),
        document_digest=prep.document_digest,
        reserved_start=prep.reserved_region_start,
        reserved_end=prep.reserved_region_end,
        signed_attrs=attrs.dump(),
        md_algorithm=md,
        name=name,
    )


def check_pdf_signature_value(prepared: PreparedPdf, value: bytes) -> str | None:
    """None when value signs the prepared signed attributes with the certificate's key, else why (French)."""
    cert = prepared.cert
    key = cert.public_key()
    method = {
        ("rsa", "sha256"): SignatureMethod.RSA_SHA256.value, ("rsa", "sha384"): SignatureMethod.RSA_SHA384.value,
        ("rsa", "sha512"): SignatureMethod.RSA_SHA512.value, ("ec", "sha256"): SignatureMethod.ECDSA_SHA256.value,
        ("ec", "sha384"): SignatureMethod.ECDSA_SHA384.value, ("ec", "sha512"): SignatureMethod.ECDSA_SHA512.value,
    }[("ec" if isinstance(key, ec.EllipticCurvePublicKey) else "rsa", prepared.md_algorithm)]
    if isinstance(value, bytes) and verify_bytes(key, value, prepared.signed_attrs, method):
        return None
    return (
        f"La valeur de signature du document « {prepared.name} » ne correspond pas à la clé du certificat "
        f"« {common_name(cert)} » : elle est refusée, rien n'est transmis. Signez de nouveau ce document."
    )


def assemble_pdf(prepared: PreparedPdf, signature_value: bytes, *, trust: TrustConfig | None = None,
                 expected: ExpectedSigner | None = None) -> bytes:
    """Phase 2: embed the CMS built around the token's raw value; refused if the value does not verify.

    Idempotent: the same prepared state and value always give the same PDF bytes.
    """
    from asn1crypto import cms
    from pyhanko.sign import signers
    from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
    from pyhanko.sign.signers.pdf_signer import PdfTBSDocument
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    problem = check_pdf_signature_value(prepared, signature_value)
    if problem:
        raise RemoteSignatureRefused(problem)
    cert = prepared.cert
    if trust is not None or expected is not None:  # revoked since preparation? checked again now
        check_signer(cert, trust, expected=expected,
                     intermediates=[x509.load_der_x509_certificate(c) for c in prepared.chain])
    value = signature_value
    if isinstance(cert.public_key(), ec.EllipticCurvePublicKey):  # CMS wants DER, PKCS#11 gives r||s
        half = len(value) // 2
        value = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
    chain = [x509.load_der_x509_certificate(c) for c in prepared.chain]
    ext = signers.ExternalSigner(_asn1(cert), SimpleCertificateStore.from_certs([_asn1(c) for c in chain]),
                                 signature_value=value, signature_mechanism=_mechanism(cert, prepared.md_algorithm))
    prep = PreparedByteRangeDigest(prepared.document_digest, prepared.reserved_start, prepared.reserved_end)
    output = io.BytesIO(prepared.prepared_pdf)

    async def run():
        sig_cms = await ext.async_sign_prescribed_attributes(
            prepared.md_algorithm, signed_attrs=cms.CMSAttributes.load(prepared.signed_attrs)
        )
        await PdfTBSDocument.async_finish_signing(output, prepared_digest=prep, signature_cms=sig_cms)

    _run(run())
    return output.getvalue()


# --- batches: what the agent receives and what it posts back ------------------------------------------


Prepared = PreparedPes | PreparedPdf | PreparedDetached


def _check_values(prepared: Prepared, values: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, str]]:
    if isinstance(prepared, PreparedPes):
        return check_signature_values(prepared, values)
    check = check_pdf_signature_value if isinstance(prepared, PreparedPdf) else check_detached_value
    expected_part = "pdf" if isinstance(prepared, PreparedPdf) else "xades"
    ok, bad = {}, {}
    for part, value in values.items():
        problem = check(prepared, value) if part == expected_part else f"Partie « {part} » inconnue pour ce document."
        if problem:
            bad[part] = problem
        else:
            ok[part] = value
    return ok, bad


def _assemble(prepared: Prepared, values: dict[str, bytes], *, trust: TrustConfig | None,
              expected: ExpectedSigner | None) -> bytes:
    if isinstance(prepared, PreparedPdf):
        return assemble_pdf(prepared, values["pdf"], trust=trust, expected=expected)
    if trust is not None or expected is not None:  # revoked since preparation? checked again now
        check_signer(prepared.cert, trust, expected=expected)
    if isinstance(prepared, PreparedPes):
        return assemble_pes(prepared, values)
    return assemble_detached(prepared, values["xades"])


def load_prepared(text: str | bytes | dict) -> Prepared:
    """A prepared state back from its JSON (after a restart), whatever its kind."""
    try:
        data = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        raise RemoteSignatureRefused("État de signature préparé illisible (JSON invalide).") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt == _PDF_FORMAT:
        return PreparedPdf.from_dict(data)
    if fmt == "demat-prepared-pes/1":
        return PreparedPes.from_dict(data)
    if fmt == DETACHED_FORMAT:
        return PreparedDetached.from_dict(data)
    raise RemoteSignatureRefused("État de signature préparé d'un format inconnu : préparez de nouveau la signature.")


@dataclass
class BatchItem:
    id: str  # "<document ref>/<bordereau Id>" or "<document ref>/pdf"
    digest_algorithm: str
    digest: bytes
    summary: str = ""


def make_batch(documents: dict[str, Prepared], *, batch_id: str, summaries: dict[str, str] | None = None) -> dict:
    """The JSON the agent signs: one item per digest, all for the same certificate (one PIN entry).

    `documents` maps a document reference (dossier id, ...) to its prepared state.
    """
    certs = {p.certificate for p in documents.values()}
    if len(certs) > 1:
        raise RemoteSignatureRefused("Un lot de signature ne peut concerner qu'un seul certificat (un seul signataire).")
    summaries = summaries or {}
    items = []
    cert_der = next(iter(certs)) if certs else b""
    for ref, prepared in documents.items():
        if "/" in ref:
            raise RemoteSignatureRefused(f"Référence de document invalide dans un lot : « {ref} » (pas de « / »).")
        for part, digest in prepared.digests().items():
            label = summaries.get(ref, ref)
            if isinstance(prepared, PreparedPes):
                b = next(x for x in prepared.bordereaux if x.id == part)
                label += f" — bordereau {b.idbord or b.id}"
            items.append({"id": f"{ref}/{part}", "digest_algorithm": prepared.digest_algorithm,
                          "digest": base64.b64encode(digest).decode("ascii"), "summary": label})
    cert = x509.load_der_x509_certificate(cert_der) if cert_der else None
    return {
        "format": BATCH_FORMAT,
        "batch_id": batch_id,
        "certificate_sha256": fingerprint(cert) if cert else None,
        "signer": common_name(cert) if cert else None,
        "items": items,
    }


@dataclass
class Applied:
    """What a posted set of signatures did: per document, accepted and refused parts, and outputs."""

    accepted: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # item id -> French reason
    signed: dict[str, bytes] = field(default_factory=dict)  # document ref -> signed document (complete ones)
    waiting: dict[str, list[str]] = field(default_factory=dict)  # document ref -> parts still to sign


def apply_signatures(
    documents: dict[str, Prepared],
    posted: dict,
    *,
    already: dict[str, dict[str, bytes]] | None = None,
    trust: TrustConfig | None = None,
    expected: ExpectedSigner | None = None,
) -> Applied:
    """Check a `demat-signatures/1` answer against prepared documents and assemble those complete.

    `already` holds values accepted earlier (a batch interrupted by a removed token): they are
    kept, new ones are added, so posting the same signatures twice changes nothing. A document
    is assembled only when all its parts verify.
    """
    if not isinstance(posted, dict) or posted.get("format") != SIGNATURES_FORMAT:
        raise RemoteSignatureRefused("Réponse de l'agent de signature d'un format inconnu (demat-signatures/1 attendu).")
    sigs = posted.get("signatures") or {}
    if not isinstance(sigs, dict):
        raise RemoteSignatureRefused("Réponse de l'agent de signature invalide : « signatures » doit être un objet.")
    out = Applied()
    by_doc: dict[str, dict[str, bytes]] = {}
    for item_id, b64 in sigs.items():
        ref, _, part = str(item_id).partition("/")
        if ref not in documents or not part:
            out.refused[item_id] = f"Signature reçue pour « {item_id} », qui n'est pas dans ce lot : ignorée."
            continue
        try:
            by_doc.setdefault(ref, {})[part] = base64.b64decode(b64, validate=True)
        except (ValueError, TypeError):
            out.refused[item_id] = f"Signature de « {item_id} » illisible (base64 invalide) : refusée."
    for ref, prepared in documents.items():
        kept = dict((already or {}).get(ref, {}))
        ok, bad = _check_values(prepared, by_doc.get(ref, {}))
        for part, reason in bad.items():
            out.refused[f"{ref}/{part}"] = reason
        for part, value in ok.items():  # the first accepted value wins: a re-post never changes a signed document
            kept.setdefault(part, value)
        out.accepted[ref] = kept
        missing = [p for p in prepared.digests() if p not in kept]
        if missing:
            out.waiting[ref] = missing
            continue
        out.signed[ref] = _assemble(prepared, kept, trust=trust, expected=expected)
    return out
