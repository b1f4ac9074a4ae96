"""Detached XAdES-BES signature of a document (PDF acte), for the @ctes signature file.

The same engine as the PES signatures: a ds:Signature whose first Reference designates the file
by name (digest of its bytes, no transform) and whose second covers the SignedProperties
(signing time, certificate, claimed role). cryptography cannot verify CMS, so XAdES keeps the
signer and the verifier in one place; the output is a small standalone XML file.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding
from flows.signature.certs import check_signing_certificate, load_signer
from flows.signature.dsig import DS, XADES_111
from flows.signature.verify import SignatureResult, _Ctx, _trust, verify_signature_element
from flows.signature.xades import _Builder


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
    """A detached XAdES signature (UTF-8 XML) of `data`, referenced as `name`."""
    signer = load_signer(p12_path, password)
    when = (signing_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    check_signing_certificate(signer.cert, at=when)
    builder = _Builder(signer, role=role, place=place, policy=None, signing_time=when, xades_ns=XADES_111)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
    sig_id = "SIG_" + hashlib.sha256(data).hexdigest()[:16]
    fragment = builder.fragment(sig_id, quote(name), digest, enveloped=False, declare_ds=True, xml_target=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + fragment.encode("utf-8")


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
