"""Detached XAdES-BES signature of a document (PDF acte), for the @ctes signature file.

The same engine as the PES signatures: a ds:Signature whose first Reference designates the file
by name (digest of its bytes, no transform) and whose second covers the SignedProperties
(signing time, certificate, claimed role). cryptography cannot verify CMS, so XAdES keeps the
signer and the verifier in one place; the output is a small standalone XML file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from flows import xmlsafe
from flows.findings import Finding
from flows.signature.certs import load_signer
from flows.signature.dsig import DS, SIGNATURE_METHODS, XADES_111, sign_bytes, verify_bytes
from flows.signature.verify import SignatureResult, _Ctx, _trust, verify_signature_element
from flows.signature.xades import _Builder

DETACHED_FORMAT = "demat-prepared-detached/1"


@dataclass
class PreparedDetached:
    """Phase 1 of a detached XAdES signature: the SignedInfo over the document's digest. JSON-able."""

    document_sha256: str
    certificate: bytes  # DER
    role: str
    place: str | None
    name: str
    signing_time: datetime
    sig_id: str
    signed_info: str
    method: str

    kind = "detached"

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate)

    @property
    def digest_algorithm(self) -> str:
        return SIGNATURE_METHODS[self.method][1]

    def builder(self) -> _Builder:
        return _Builder(self.cert, role=self.role, place=self.place, policy=None, signing_time=self.signing_time,
                        xades_ns=XADES_111, method=self.method)

    def to_be_signed(self) -> dict[str, bytes]:
        return {"xades": self.builder().signed_info_c14n(self.signed_info)}

    def digests(self) -> dict[str, bytes]:
        return {k: hashlib.new(self.digest_algorithm, v).digest() for k, v in self.to_be_signed().items()}

    def to_dict(self) -> dict:
        return {"format": DETACHED_FORMAT, "document_sha256": self.document_sha256,
                "certificate": base64.b64encode(self.certificate).decode("ascii"), "role": self.role,
                "place": self.place, "name": self.name, "signing_time": self.signing_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "sig_id": self.sig_id, "signed_info": self.signed_info, "method": self.method}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> PreparedDetached:
        from flows.signature.xades import RemoteSignatureRefused

        try:
            if data.get("format") != DETACHED_FORMAT or data["method"] not in SIGNATURE_METHODS:
                raise ValueError("format")
            prepared = cls(
                document_sha256=str(data["document_sha256"]), certificate=base64.b64decode(data["certificate"], validate=True),
                role=str(data["role"]), place=data.get("place"), name=str(data["name"]),
                signing_time=datetime.strptime(data["signing_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                sig_id=str(data["sig_id"]), signed_info=str(data["signed_info"]), method=str(data["method"]),
            )
            x509.load_der_x509_certificate(prepared.certificate)
            if not re.fullmatch(r"SIG_[0-9a-f]{16}", prepared.sig_id):
                raise ValueError("sig_id")
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteSignatureRefused(
                f"État de signature détachée préparé illisible ({type(exc).__name__}) : préparez de nouveau la signature."
            ) from None
        return prepared

    @classmethod
    def from_json(cls, text: str | bytes) -> PreparedDetached:
        return cls.from_dict(json.loads(text))


def prepare_detached(
    data: bytes,
    signer_cert: x509.Certificate,
    *,
    role: str,
    name: str = "document.pdf",
    place: str | None = None,
    signing_time: datetime | None = None,
    trust=None,
    expected=None,
) -> PreparedDetached:
    """Phase 1 of a detached XAdES signature of `data` for a known certificate."""
    from flows.signature import trust as trust_mod

    when = (signing_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    trust_mod.check_signer(signer_cert, trust, at=when, expected=expected)
    builder = _Builder(signer_cert, role=role, place=place, policy=None, signing_time=when, xades_ns=XADES_111)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
    sig_id = "SIG_" + hashlib.sha256(data).hexdigest()[:16]
    si = builder.signed_info(sig_id, quote(name), digest, enveloped=False, xml_target=False)
    return PreparedDetached(hashlib.sha256(data).hexdigest(), signer_cert.public_bytes(serialization.Encoding.DER),
                            role, place, name, when, sig_id, si, builder.method)


def check_detached_value(prepared: PreparedDetached, value: bytes) -> str | None:
    """None when value signs the prepared SignedInfo with the certificate's key, else why (French)."""
    if isinstance(value, bytes) and verify_bytes(prepared.cert.public_key(), value, prepared.to_be_signed()["xades"], prepared.method):
        return None
    return (f"La valeur de signature du document « {prepared.name} » ne correspond pas à la clé du certificat : "
            "elle est refusée, rien n'est transmis. Signez de nouveau ce document.")


def assemble_detached(prepared: PreparedDetached, signature_value: bytes) -> bytes:
    """Phase 2: the detached signature file (UTF-8 XML); refused if the value does not verify."""
    from flows.signature.xades import RemoteSignatureRefused

    problem = check_detached_value(prepared, signature_value)
    if problem:
        raise RemoteSignatureRefused(problem)
    fragment = prepared.builder().signature(prepared.sig_id, prepared.signed_info, signature_value, declare_ds=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + fragment.encode("utf-8")


def sign_detached(
    data: bytes,
    p12_path: str | Path,
    password: bytes,
    *,
    role: str,
    name: str = "document.pdf",
    place: str | None = None,
    signing_time: datetime | None = None,
) -> bytes:
    """A detached XAdES signature (UTF-8 XML) of `data`, referenced as `name` (prepare, sign here, assemble)."""
    signer = load_signer(p12_path, password)
    prepared = prepare_detached(data, signer.cert, role=role, name=name, place=place, signing_time=signing_time)
    return assemble_detached(prepared, sign_bytes(signer.key, prepared.to_be_signed()["xades"], prepared.method))


def verify_detached(
    data: bytes,
    signature: bytes,
    trust_store: Iterable = (),
    *,
    strict: bool = False,
) -> SignatureResult:
    """Check a detached signature against the document bytes; findings are French."""
    result = SignatureResult(bordereau_id=None)
    try:
        root = xmlsafe.parse_bytes(signature)
    except (etree.XMLSyntaxError, xmlsafe.UnsafeXML) as exc:
        result.findings.append(Finding("SIG-DOC-LECTURE", f"Fichier de signature illisible : {exc}", layer="signature"))
        return result
    if root.tag != f"{{{DS}}}Signature":
        result.findings.append(Finding("SIG-DOC-LECTURE", "Ce fichier n'est pas une signature XML (ds:Signature).", layer="signature"))
        return result
    external = [
        r.get("URI")
        for r in root.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
        if r.get("URI") and not r.get("URI").startswith("#")
    ]
    if len(external) != 1:
        result.findings.append(
            Finding("SIG-REFERENCE", "La signature doit désigner exactement un document signé.", layer="signature")
        )
        return result
    ctx = _Ctx(root, _trust(trust_store), strict, None, {external[0]: data})
    verify_signature_element(root, ctx, result, expected_target=None)
    return result
