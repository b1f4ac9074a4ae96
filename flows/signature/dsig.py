"""XML-DSig / XAdES building blocks shared by the signer and the verifier.

Algorithm identifiers come from signxml's enums; canonicalisation is lxml's (libxml2) C14N and
RSA/ECDSA is `cryptography`, so the signer and verifier agree with xmlsec1 byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES_111 = "http://uri.etsi.org/01903/v1.1.1#"
XADES_122 = "http://uri.etsi.org/01903/v1.2.2#"  # not an ETSI namespace, but produced in the field (1.7 sample)
XADES_132 = "http://uri.etsi.org/01903/v1.3.2#"
XADES_NAMESPACES = (XADES_111, XADES_122, XADES_132)
PES_ALLER = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value
EXC_C14N_COMMENTS = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0_WITH_COMMENTS.value
C14N = CanonicalizationMethod.CANONICAL_XML_1_0.value
C14N_COMMENTS = CanonicalizationMethod.CANONICAL_XML_1_0_WITH_COMMENTS.value
C14N_11 = CanonicalizationMethod.CANONICAL_XML_1_1.value
C14N_11_COMMENTS = CanonicalizationMethod.CANONICAL_XML_1_1_WITH_COMMENTS.value
C14N_METHODS = {EXC_C14N, EXC_C14N_COMMENTS, C14N, C14N_COMMENTS, C14N_11, C14N_11_COMMENTS}

DIGESTS = {
    DigestAlgorithm.SHA1.value: "sha1",
    DigestAlgorithm.SHA256.value: "sha256",
    DigestAlgorithm.SHA384.value: "sha384",
    DigestAlgorithm.SHA512.value: "sha512",
}
DIGEST_URI = {name: uri for uri, name in DIGESTS.items()}

_HASH = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
SIGNATURE_METHODS = {
    SignatureMethod.RSA_SHA1.value: ("rsa", "sha1"),
    SignatureMethod.RSA_SHA256.value: ("rsa", "sha256"),
    SignatureMethod.RSA_SHA384.value: ("rsa", "sha384"),
    SignatureMethod.RSA_SHA512.value: ("rsa", "sha512"),
    SignatureMethod.ECDSA_SHA256.value: ("ecdsa", "sha256"),
    SignatureMethod.ECDSA_SHA384.value: ("ecdsa", "sha384"),
    SignatureMethod.ECDSA_SHA512.value: ("ecdsa", "sha512"),
}


@dataclass(frozen=True)
class Policy:
    """A DGFiP Hélios signature policy: identifier, its hash, and the algorithms that go with it."""

    version: str
    identifier: str
    hash_algorithm: str  # "sha1" | "sha256"
    hash_value: str
    digest: str  # digest for references and certificate
    signature_method: str
    spuri: str
    description: str = "Politique de signature Helios de la DGFiP"


POLICIES = {
    "1.4": Policy(
        "1.4",
        "urn:oid:1.2.250.1.131.1.5.18.21.1.4",
        "sha1",
        "Jkdb+aba0Hz6+ZPKmKNhPByzQ+Q=",
        "sha1",
        SignatureMethod.RSA_SHA1.value,
        "https://portail.dgfip.finances.gouv.fr/documents/PS_Helios_DGFiP.pdf",
    ),
    "1.7": Policy(
        "1.7",
        "urn:oid:1.2.250.1.131.1.5.18.21.1.7",
        "sha256",
        "roF9+cfRHNPtVJolhdqfIqGMVuUXX8aR4rpiquf0u5E=",
        "sha256",
        SignatureMethod.RSA_SHA256.value,
        "https://www.collectivites-locales.gouv.fr/files/files/finances_locales/dematerialisation/ps_helios_dgfip.pdf",
    ),
}
POLICY_BY_ID = {p.identifier: p for p in POLICIES.values()}


def canonicalize(node: etree._Element, method: str, inclusive_prefixes: list[str] | None = None) -> bytes:
    if method not in C14N_METHODS:
        raise ValueError(f"méthode de canonisation non prise en charge : {method}")
    exclusive = method in (EXC_C14N, EXC_C14N_COMMENTS)
    comments = method in (EXC_C14N_COMMENTS, C14N_COMMENTS, C14N_11_COMMENTS)
    kwargs = {"method": "c14n", "exclusive": exclusive, "with_comments": comments}
    if exclusive and inclusive_prefixes:
        kwargs["inclusive_ns_prefixes"] = inclusive_prefixes
    if method in (C14N_11, C14N_11_COMMENTS):
        kwargs["method"] = "c14n2"  # closest lxml offers; c14n 1.1 is rare in PES
        kwargs.pop("exclusive")
    return etree.tostring(node, **kwargs)


def digest_b64(data: bytes, algorithm: str) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii")


def wrap76(b64: str) -> str:
    """Base64 cut at 76 characters with LF, as the Java tools that produced the samples do."""
    return "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))


def sign_bytes(key, data: bytes, method_uri: str) -> bytes:
    kind, hname = SIGNATURE_METHODS[method_uri]
    h = _HASH[hname]()
    if kind == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("la clé du certificat n'est pas une clé RSA")
        return key.sign(data, padding.PKCS1v15(), h)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))  # XML-DSig wants r||s, not DER
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify_bytes(public_key, signature: bytes, data: bytes, method_uri: str) -> bool:
    kind, hname = SIGNATURE_METHODS[method_uri]
    h = _HASH[hname]()
    try:
        if kind == "rsa":
            if not isinstance(public_key, rsa.RSAPublicKey):
                return False
            public_key.verify(signature, data, padding.PKCS1v15(), h)
        else:
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                return False
            half = len(signature) // 2
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
            public_key.verify(der, data, ec.ECDSA(h))
    except InvalidSignature:
        return False
    return True


def signature_method_for(key, policy: Policy) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return SignatureMethod.ECDSA_SHA256.value
    return policy.signature_method
