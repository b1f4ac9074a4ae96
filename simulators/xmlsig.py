"""The counterparts' own XML signature verifier: XMLDSig / XAdES, enveloped or detached.

Written for the simulators on lxml's canonicalisation and `cryptography`, never on demat's
flows.signature: a bug in demat's signer or verifier must show up as a refusal here. It checks
what a State gateway checks: each Reference's digest after its transforms, the SignatureValue
over the canonical SignedInfo with the certificate's key, the certificate's chain to the
counterpart's OWN trust store (PEM files), its validity now and at the claimed SigningTime, its
key usage (signature or non-repudiation), and the XAdES SigningCertificate digest.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

log = logging.getLogger(__name__)

DS = "http://www.w3.org/2000/09/xmldsig#"
EC_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"
XADES_NAMESPACES = ("http://uri.etsi.org/01903/v1.1.1#", "http://uri.etsi.org/01903/v1.3.2#")
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
# algorithm URI -> (exclusive, with_comments)
C14N = {
    "http://www.w3.org/2001/10/xml-exc-c14n#": (True, False),
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": (True, True),
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315": (False, False),
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments": (False, True),
}
DIGESTS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
SIGNATURES = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384),
}

SIGNATURE = "SIGNATURE"  # the signature does not hold (altered content, garbage, unknown algorithm)
CERTIFICATE = "CERTIFICAT"  # it holds, but the signer's certificate is not acceptable


def q(tag: str) -> str:
    return f"{{{DS}}}{tag}"


@dataclass
class Problem:
    code: str  # SIGNATURE or CERTIFICAT
    message: str  # French


@dataclass
class Verdict:
    problems: list[Problem] = field(default_factory=list)
    signer: str = ""  # subject of the signer's certificate
    references: list[str] = field(default_factory=list)  # URIs the signature covers
    signing_time: datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, code: str, message: str) -> Verdict:
        self.problems.append(Problem(code, message))
        return self


class TrustStore:
    """CA certificates the counterpart trusts (its own configuration, not demat's)."""

    def __init__(self, certs: list[x509.Certificate] | None = None, sources: list[str] | None = None):
        self.certs = list(certs or [])
        self.sources = list(sources or [])

    @classmethod
    def load(cls, paths) -> TrustStore:
        certs, sources = [], []
        for raw in paths or ():
            p = Path(raw)
            files = sorted(p.glob("*.pem")) + sorted(p.glob("*.crt")) if p.is_dir() else [p]
            for f in files:
                try:
                    data = f.read_bytes()
                except OSError as exc:
                    log.warning("magasin de confiance : %s illisible (%s)", f, exc)
                    continue
                try:
                    found = x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [
                        x509.load_der_x509_certificate(data)]
                except ValueError as exc:
                    log.warning("magasin de confiance : %s n'est pas un certificat (%s)", f, exc)
                    continue
                certs += found
                sources.append(str(f))
        return cls(certs, sources)

    def __bool__(self) -> bool:
        return bool(self.certs)

    def describe(self) -> str:
        if not self.certs:
            return "magasin de confiance VIDE : toute signature sera refusée (certificat non reconnu)"
        names = ", ".join(c.subject.rfc4514_string() for c in self.certs)
        return f"{len(self.certs)} autorité(s) de confiance ({names})"


@functools.lru_cache(maxsize=8)
def _trust(paths: tuple[str, ...], _stamps: tuple) -> TrustStore:
    return TrustStore.load(paths)


def _stamp(path: str):
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def trust_from_settings(settings) -> TrustStore:
    """The counterpart's trust store: Settings.extra["trust_store"], PEM paths (list, or comma-separated);
    read again when a file appears or changes (the platform may create its PKI after the simulators)."""
    raw = settings.extra.get("trust_store") or ()
    if isinstance(raw, str):
        raw = [p for p in raw.split(",") if p]
    paths = tuple(str(p) for p in raw)
    return _trust(paths, tuple(_stamp(p) for p in paths))


# -- canonicalisation -------------------------------------------------------------------------------


def _prefixes(transform: etree._Element | None) -> list[str] | None:
    if transform is None:
        return None
    inc = transform.find(f"{{{EC_NS}}}InclusiveNamespaces")
    if inc is None:
        return None
    return [p for p in (inc.get("PrefixList") or "").split() if p]


def canonical(el: etree._Element, algorithm: str, transform: etree._Element | None = None) -> bytes:
    if algorithm not in C14N:
        raise ValueError(f"canonicalisation « {algorithm} » non prise en charge")
    exclusive, comments = C14N[algorithm]
    prefixes = _prefixes(transform) if exclusive else None
    return etree.tostring(el, method="c14n", exclusive=exclusive, with_comments=comments,
                          inclusive_ns_prefixes=prefixes)


@contextlib.contextmanager
def _detached(sig: etree._Element):
    """The enveloped-signature transform: the tree without this Signature element (its tail kept)."""
    parent = sig.getparent()
    if parent is None:
        yield
        return
    index = parent.index(sig)
    prev = sig.getprevious()
    tail = sig.tail
    saved = prev.tail if prev is not None else parent.text
    sig.tail = None
    parent.remove(sig)
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    try:
        yield
    finally:
        if prev is not None:
            prev.tail = saved
        else:
            parent.text = saved
        parent.insert(index, sig)
        sig.tail = tail


def _by_id(root: etree._Element, ident: str) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str)
            and any(el.get(a) == ident for a in ("Id", "ID", "id"))]


def _digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def _b64(text: str | None) -> bytes:
    return base64.b64decode("".join((text or "").split()), validate=True)


# -- verification -----------------------------------------------------------------------------------


def _reference_bytes(ref: etree._Element, sig: etree._Element, root: etree._Element,
                     detached: dict[str, bytes]) -> bytes:
    uri = ref.get("URI")
    transforms = ref.findall(f"{q('Transforms')}/{q('Transform')}")
    algos = [t.get("Algorithm") for t in transforms]
    if uri is not None and uri.startswith("#"):
        targets = _by_id(root, uri[1:])
        if len(targets) != 1:
            raise ValueError(f"la référence {uri} désigne {len(targets)} élément(s) (une seule attendue)")
        target = targets[0]
        c14n = next((a for a in algos if a in C14N), "http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
        tnode = next((t for t in transforms if t.get("Algorithm") == c14n), None)
        for a in algos:
            if a != ENVELOPED and a not in C14N:
                raise ValueError(f"transformation « {a} » non prise en charge")
        inside = any(a is sig for a in target.iter())
        if ENVELOPED in algos and inside:
            with _detached(sig):
                return canonical(target, c14n, tnode)
        if inside:
            raise ValueError(f"la référence {uri} contient la signature sans la transformation enveloped-signature")
        return canonical(target, c14n, tnode)
    if uri is not None and uri in detached:  # a detached document, by name
        if algos:
            raise ValueError(f"transformation sur un document détaché non prise en charge : {algos}")
        return detached[uri]
    raise ValueError(f"référence « {uri} » introuvable")


def _check_value(cert: x509.Certificate, method: str, signed: bytes, value: bytes) -> None:
    if method not in SIGNATURES:
        raise ValueError(f"algorithme de signature « {method} » non pris en charge")
    kind, hash_cls = SIGNATURES[method]
    key = cert.public_key()
    if kind == "rsa":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("la clé du certificat n'est pas une clé RSA")
        key.verify(value, signed, padding.PKCS1v15(), hash_cls())
    else:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("la clé du certificat n'est pas une clé EC")
        half = len(value) // 2
        der = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
        key.verify(der, signed, ec.ECDSA(hash_cls()))


def _signing_time(sig: etree._Element) -> datetime | None:
    for ns in XADES_NAMESPACES:
        el = sig.find(f".//{{{ns}}}SigningTime")
        if el is not None and el.text:
            try:
                when = datetime.fromisoformat(el.text.strip().replace("Z", "+00:00"))
            except ValueError:
                return None
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _signing_certificate_ok(sig: etree._Element, cert: x509.Certificate) -> str | None:
    """None when the XAdES SigningCertificate (if any) names this certificate; else a French reason."""
    for ns in XADES_NAMESPACES:
        sc = sig.find(f".//{{{ns}}}SigningCertificate")
        if sc is None:
            continue
        der = cert.public_bytes(serialization.Encoding.DER)
        for cd in sc.iter(f"{{{ns}}}CertDigest"):
            method = cd.find(q("DigestMethod"))
            method = method if method is not None else cd.find(f"{{{ns}}}DigestMethod")  # XAdES 1.1.1 spelling
            value = cd.find(q("DigestValue"))
            value = value if value is not None else cd.find(f"{{{ns}}}DigestValue")
            if method is None or value is None or method.get("Algorithm") not in DIGESTS:
                continue
            try:
                if _digest(DIGESTS[method.get("Algorithm")], der) == _b64(value.text):
                    return None
            except ValueError:
                break
        return "la propriété signée SigningCertificate ne désigne pas le certificat joint à la signature"
    return None


def _chain(cert: x509.Certificate, extra: list[x509.Certificate], trust: TrustStore, at: datetime) -> str | None:
    """None when `cert` chains to a trusted CA (through `extra` intermediates); else a French reason."""
    current = cert
    pool = list(extra)
    for _ in range(6):
        for anchor in trust.certs:
            if anchor.subject == current.issuer:
                try:
                    current.verify_directly_issued_by(anchor)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                if not (anchor.not_valid_before_utc <= at <= anchor.not_valid_after_utc):
                    return f"l'autorité {anchor.subject.rfc4514_string()} n'est pas valide à cette date"
                return None
        parent = next((c for c in pool if c.subject == current.issuer and c is not current), None)
        if parent is None:
            break
        try:
            current.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            break
        pool.remove(parent)
        current = parent
    return (f"le certificat de {cert.subject.rfc4514_string()} (émis par {cert.issuer.rfc4514_string()}) "
            "n'est pas émis par une autorité de confiance du destinataire")


def verify_signature(sig: etree._Element, trust: TrustStore, *, detached: dict[str, bytes] | None = None,
                     now: datetime | None = None) -> Verdict:
    """Verify one ds:Signature in its document. Never raises: every fault is a Problem."""
    v = Verdict()
    root = sig.getroottree().getroot()
    si = sig.find(q("SignedInfo"))
    sv = sig.find(q("SignatureValue"))
    if si is None or sv is None:
        return v.add(SIGNATURE, "signature incomplète : SignedInfo ou SignatureValue absent")
    cm = si.find(q("CanonicalizationMethod"))
    sm = si.find(q("SignatureMethod"))
    refs = si.findall(q("Reference"))
    if cm is None or sm is None or not refs:
        return v.add(SIGNATURE, "SignedInfo incomplet (CanonicalizationMethod, SignatureMethod ou Reference absent)")
    v.references = [r.get("URI") or "" for r in refs]
    for ref in refs:
        dm = ref.find(q("DigestMethod"))
        dv = ref.find(q("DigestValue"))
        try:
            if dm is None or dm.get("Algorithm") not in DIGESTS:
                raise ValueError("algorithme d'empreinte absent ou non pris en charge")
            expected = _b64(dv.text if dv is not None else "")
            data = _reference_bytes(ref, sig, root, detached or {})
        except (ValueError, TypeError, etree.C14NError) as exc:
            v.add(SIGNATURE, f"référence {ref.get('URI')!r} : {exc}")
            continue
        if _digest(DIGESTS[dm.get("Algorithm")], data) != expected:
            v.add(SIGNATURE, f"l'empreinte de la référence {ref.get('URI')!r} ne correspond pas : "
                             "le contenu signé a été modifié après la signature")
    certs = []
    for el in sig.iterfind(f"{q('KeyInfo')}/{q('X509Data')}/{q('X509Certificate')}"):
        try:
            certs.append(x509.load_der_x509_certificate(_b64(el.text)))
        except ValueError:
            return v.add(SIGNATURE, "certificat du signataire illisible dans KeyInfo")
    if not certs:
        return v.add(SIGNATURE, "aucun certificat du signataire dans KeyInfo/X509Data")
    cert = certs[0]
    v.signer = cert.subject.rfc4514_string()
    try:
        _check_value(cert, sm.get("Algorithm") or "", canonical(si, cm.get("Algorithm") or "", cm), _b64(sv.text))
    except InvalidSignature:
        v.add(SIGNATURE, "la valeur de signature ne correspond pas à SignedInfo et à la clé du certificat")
    except (ValueError, TypeError, etree.C14NError) as exc:
        v.add(SIGNATURE, f"valeur de signature invérifiable : {exc}")
    now = now or datetime.now(UTC)
    v.signing_time = _signing_time(sig)
    for when, what in ((now, "aujourd'hui"), (v.signing_time, "à l'heure de signature déclarée")):
        if when is not None and not (cert.not_valid_before_utc <= when <= cert.not_valid_after_utc):
            v.add(CERTIFICATE, f"le certificat de {v.signer} n'est pas valide {what} "
                               f"(du {cert.not_valid_before_utc:%d/%m/%Y} au {cert.not_valid_after_utc:%d/%m/%Y})")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (ku.digital_signature or ku.content_commitment):
            v.add(CERTIFICATE, f"le certificat de {v.signer} n'est pas un certificat de signature (usage de clé)")
    except x509.ExtensionNotFound:
        pass
    reason = _signing_certificate_ok(sig, cert)
    if reason:
        v.add(SIGNATURE, reason)
    reason = _chain(cert, certs[1:], trust, now)
    if reason:
        v.add(CERTIFICATE, reason)
    return v
