"""XAdES-EPES signature of PES_Aller bordereaux under the DGFiP Hélios policy.

One enveloped ds:Signature per Bordereau, shaped like the signatures Hélios receives in the field
(Ids `<Id>_SIG_1`, `_SIG_1_SP`, `_SIG_1_SV`; exclusive c14n; SignedProperties second reference).

Speed: the document is parsed once; each bordereau is canonicalised from that tree and its
signature is built as a small fragment. Exclusive c14n only renders the namespaces a subtree
uses, so a fragment canonicalised on its own digests exactly as it will inside the document:
the fragments are then spliced into the original bytes before each `</Bordereau>`, which keeps
the file byte-for-byte identical elsewhere (encoding, declaration, spacing). When the bytes
cannot be spliced safely (comments, CDATA...), the tree is serialised once instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape  # nosec B406 - escaping only, nothing is parsed here

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml.algorithms import SignatureMethod

from flows import xmlsafe
from flows.signature import trust as _trust  # called through the module: tests may substitute check_signer
from flows.signature.certs import Signer, common_name, load_signer
from flows.signature.dsig import (
    DIGEST_URI,
    DS,
    ENVELOPED,
    EXC_C14N,
    PES_ALLER,
    POLICIES,
    SIGNATURE_METHODS,
    XADES_111,
    XADES_NAMESPACES,
    Policy,
    canonicalize,
    digest_b64,
    sign_bytes,
    verify_bytes,
    wrap76,
)

BLOCKS = {"PES_DepenseAller": "EnTeteDepense", "PES_RecetteAller": "EnTeteRecette"}
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,200}$")
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_DECL = re.compile(rb"^(\xef\xbb\xbf)?\s*<\?xml[^>]*\?>")
_END_BORDEREAU = re.compile(rb"</Bordereau\s*>")
_ENTETE = re.compile(rb"<(EnTeteDepense|EnTeteRecette)(\s[^>]*)?>(.*?)</\1\s*>", re.S)
_INFODEM = re.compile(rb"<InfoDematerialisee\b[^>]*?(?:/>|>\s*</InfoDematerialisee\s*>)")
_IDVER = re.compile(rb"(\s*)<IdVer\b[^>]*?(?:/>|>[^<]*</IdVer\s*>)")


class SignatureError(ValueError):
    """The PES cannot be signed as asked (not a PES_Aller, already signed, bad Id...). French."""


def _text(value: str, what: str, limit: int = 255) -> str:
    value = (value or "").strip()
    if not value:
        raise SignatureError(f"{what} est obligatoire dans la signature (politique Hélios).")
    if len(value) > limit or _BAD_CHARS.search(value):
        raise SignatureError(f"{what} contient des caractères interdits ou dépasse {limit} caractères.")
    return escape(value)


def _place_xml(place: str | None) -> str:
    """Place text: '34000 Montpellier' gives City + PostalCode, 'Montpellier' a City; country France."""
    if not place:
        return ""
    place = place.strip()
    m = re.match(r"^(\d{5})\s+(.+)$", place)
    city, postal = (m.group(2), m.group(1)) if m else (place, None)
    out = f"<xad:SignatureProductionPlace><xad:City>{_text(city, 'La ville')}</xad:City>"
    if postal:
        out += f"<xad:PostalCode>{postal}</xad:PostalCode>"
    return out + "<xad:CountryName>France</xad:CountryName></xad:SignatureProductionPlace>"


class _Builder:
    """Everything that is the same for every bordereau of one signing run, prepared once.

    It needs only the signer's certificate: the private key is used by whoever signs the
    canonical SignedInfo (in process, on the official's token or in the seal's HSM), so the
    one-phase and two-phase paths build exactly the same XML.
    """

    def __init__(
        self,
        cert: x509.Certificate,
        *,
        role: str,
        place: str | None,
        policy: Policy | None,
        signing_time: datetime,
        xades_ns: str,
        method: str | None = None,
    ) -> None:
        self.cert = cert
        self.policy = policy
        self.xades_ns = xades_ns
        digest = policy.digest if policy else "sha256"
        self.digest = digest
        self.digest_uri = DIGEST_URI[digest]
        self.method = method or method_for_certificate(cert, policy)
        der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_b64 = wrap76(base64.b64encode(der).decode("ascii"))
        cert_digest = base64.b64encode(
            cert.fingerprint(hashes.SHA1() if digest == "sha1" else hashes.SHA256())  # noqa: S303  # nosec B303 - policy 1.4 mandates SHA-1
        ).decode("ascii")
        policy_xml = ""
        if policy:
            policy_xml = (
                "<xad:SignaturePolicyIdentifier><xad:SignaturePolicyId><xad:SigPolicyId>"
                f"<xad:Identifier>{policy.identifier}</xad:Identifier>"
                f"<xad:Description>{escape(policy.description)}</xad:Description></xad:SigPolicyId>"
                f'<xad:SigPolicyHash><xad:DigestMethod Algorithm="{DIGEST_URI[policy.hash_algorithm]}"/>'
                f"<xad:DigestValue>{policy.hash_value}</xad:DigestValue></xad:SigPolicyHash>"
                "<xad:SigPolicyQualifiers><xad:SigPolicyQualifier>"
                f"<xad:SPURI>{escape(policy.spuri)}</xad:SPURI>"
                "</xad:SigPolicyQualifier></xad:SigPolicyQualifiers>"
                "</xad:SignaturePolicyId></xad:SignaturePolicyIdentifier>"
            )
        self.props_tail = (
            f"<xad:SigningTime>{signing_time.strftime('%Y-%m-%dT%H:%M:%SZ')}</xad:SigningTime>"
            "<xad:SigningCertificate><xad:Cert><xad:CertDigest>"
            f'<xad:DigestMethod Algorithm="{DIGEST_URI["sha1" if digest == "sha1" else "sha256"]}"/>'
            f"<xad:DigestValue>{cert_digest}</xad:DigestValue></xad:CertDigest>"
            f"<xad:IssuerSerial><ds:X509IssuerName>{escape(cert.issuer.rfc4514_string())}</ds:X509IssuerName>"
            f"<ds:X509SerialNumber>{cert.serial_number}</ds:X509SerialNumber></xad:IssuerSerial>"
            "</xad:Cert></xad:SigningCertificate>"
            f"{policy_xml}{_place_xml(place)}"
            "<xad:SignerRole><xad:ClaimedRoles>"
            f"<xad:ClaimedRole>{_text(role, 'Le rôle du signataire (ClaimedRole)')}</xad:ClaimedRole>"
            "</xad:ClaimedRoles></xad:SignerRole>"
        )
        self._parser = xmlsafe.parser()

    def _sp_inner(self) -> str:
        return f"<xad:SignedSignatureProperties>{self.props_tail}</xad:SignedSignatureProperties>"

    def signed_info(self, sig_id: str, target_uri: str, target_digest: str, *, enveloped: bool, xml_target: bool = True) -> str:
        """Phase 1: the inner text of ds:SignedInfo for one target whose digest is already known.

        xml_target=False: the target is raw bytes (detached file), referenced without transforms.
        """
        x = self.xades_ns
        sp_id = f"{sig_id}_SP"
        sp_alone = f'<xad:SignedProperties xmlns:xad="{x}" xmlns:ds="{DS}" Id="{sp_id}">{self._sp_inner()}</xad:SignedProperties>'
        sp_digest = digest_b64(canonicalize(etree.fromstring(sp_alone, self._parser), EXC_C14N), self.digest)
        transforms = f'<ds:Transform Algorithm="{ENVELOPED}"/>' if enveloped else ""
        transforms += f'<ds:Transform Algorithm="{EXC_C14N}"/>'
        transforms = f"<ds:Transforms>{transforms}</ds:Transforms>" if xml_target else ""
        return (
            f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>'
            f'<ds:SignatureMethod Algorithm="{self.method}"/>'
            f'<ds:Reference URI="{escape(target_uri, {chr(34): "&quot;"})}">{transforms}'
            f'<ds:DigestMethod Algorithm="{self.digest_uri}"/><ds:DigestValue>{target_digest}</ds:DigestValue></ds:Reference>'
            f'<ds:Reference Type="{x}SignedProperties" URI="#{sp_id}"><ds:Transforms>'
            f'<ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms>'
            f'<ds:DigestMethod Algorithm="{self.digest_uri}"/><ds:DigestValue>{sp_digest}</ds:DigestValue></ds:Reference>'
        )

    def signed_info_c14n(self, si_inner: str) -> bytes:
        """The octets the signature value covers (exclusive c14n of the SignedInfo alone)."""
        si_alone = f'<ds:SignedInfo xmlns:ds="{DS}">{si_inner}</ds:SignedInfo>'
        return canonicalize(etree.fromstring(si_alone, self._parser), EXC_C14N)

    def signature(self, sig_id: str, si_inner: str, value: bytes, *, declare_ds: bool) -> str:
        """Phase 2: the whole ds:Signature around a SignedInfo and its raw signature value."""
        x = self.xades_ns
        sp_id = f"{sig_id}_SP"
        b64 = wrap76(base64.b64encode(value).decode("ascii"))
        ds_decl = f' xmlns:ds="{DS}"' if declare_ds else ""
        return (
            f'<ds:Signature{ds_decl} Id="{sig_id}"><ds:SignedInfo>{si_inner}</ds:SignedInfo>'
            f'<ds:SignatureValue Id="{sig_id}_SV">{b64}</ds:SignatureValue>'
            f"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{self.cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
            f'<ds:Object><xad:QualifyingProperties xmlns="{x}" xmlns:xad="{x}" Target="#{sig_id}">'
            f'<xad:SignedProperties Id="{sp_id}">{self._sp_inner()}</xad:SignedProperties>'
            "</xad:QualifyingProperties></ds:Object></ds:Signature>"
        )

    def fragment(
        self, key, sig_id: str, target_uri: str, target_digest: str, *, enveloped: bool, declare_ds: bool, xml_target: bool = True
    ) -> str:
        """One-phase convenience (detached signatures): prepare, sign with `key`, assemble."""
        si_inner = self.signed_info(sig_id, target_uri, target_digest, enveloped=enveloped, xml_target=xml_target)
        value = sign_bytes(key, self.signed_info_c14n(si_inner), self.method)
        return self.signature(sig_id, si_inner, value, declare_ds=declare_ds)


def method_for_certificate(cert: x509.Certificate, policy: Policy | None) -> str:
    """Signature method for the certificate's key: ECDSA-SHA256 for EC keys, else the policy's RSA."""
    if isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return SignatureMethod.ECDSA_SHA256.value
    return (policy or POLICIES["1.7"]).signature_method


def _utc(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(UTC).replace(microsecond=0)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _bordereaux(root: etree._Element) -> list[etree._Element]:
    if root.tag != f"{{{PES_ALLER}}}PES_Aller":
        raise SignatureError("Le fichier n'est pas un PES_Aller (élément racine inattendu) : signature impossible.")
    found = [b for block in root if block.tag in BLOCKS for b in block if b.tag == "Bordereau"]
    if not found:
        raise SignatureError("Le PES ne contient aucun bordereau de dépense ou de recette à signer.")
    if root.find(f"{{{DS}}}Signature") is not None:
        raise SignatureError("Le PES porte déjà une signature au niveau du flux : il ne peut pas être signé à nouveau.")
    ids: dict[str, int] = {}
    for el in root.iter():
        if isinstance(el.tag, str) and el.get("Id") is not None:
            ids[el.get("Id")] = ids.get(el.get("Id"), 0) + 1
    for b in found:
        bid = b.get("Id")
        if not bid or not _NCNAME.match(bid):
            raise SignatureError(
                f"Un bordereau n'a pas d'attribut Id valide (lu : « {bid or ''} ») : la signature doit le référencer."
            )
        if ids[bid] > 1:
            raise SignatureError(f"L'identifiant « {bid} » est porté par plusieurs éléments : signature refusée.")
        if b.find(f"{{{DS}}}Signature") is not None:
            idbord = b.find("BlocBordereau/IdBord")
            num = idbord.get("V") if idbord is not None else bid
            raise SignatureError(
                f"Le bordereau {num} est déjà signé : un bordereau ne peut être signé que par un seul représentant."
            )
        if f"{bid}_SIG_1" in ids or f"{bid}_SIG_1_SP" in ids:
            raise SignatureError(f"L'identifiant {bid}_SIG_1 existe déjà dans le fichier.")
    return found


def _splice(pes: bytes, root, bordereaux, fragments: list[bytes]) -> bytes | None:
    """Insert fragments before each </Bordereau> and set InfoDematerialisee=1, in the raw bytes.

    Returns None when the raw text holds constructs that could fool the byte scan.
    """
    decl = _DECL.match(pes)
    body_start = decl.end() if decl else 0
    if b"<!--" in pes or b"<![CDATA[" in pes or b"<?" in pes[body_start:]:
        return None
    ends = list(_END_BORDEREAU.finditer(pes))
    if len(ends) != len(bordereaux) or sum(1 for _ in root.iter("Bordereau")) != len(bordereaux):
        return None
    edits: list[tuple[int, int, bytes]] = []
    entetes = list(_ENTETE.finditer(pes))
    n_tree = sum(1 for block in root if block.tag in BLOCKS and block.find(BLOCKS[block.tag]) is not None)
    if len(entetes) != n_tree:
        return None
    for m in entetes:
        inner_start = m.start(3)
        inner = m.group(3)
        info = list(_INFODEM.finditer(inner))
        if len(info) > 1:
            return None
        if info:
            i = info[0]
            edits.append((inner_start + i.start(), inner_start + i.end(), b'<InfoDematerialisee V="1"/>'))
        else:
            idver = _IDVER.search(inner)
            if idver is None:
                return None
            pos = inner_start + idver.end()
            edits.append((pos, pos, idver.group(1) + b'<InfoDematerialisee V="1"/>'))
    for end, frag in zip(ends, fragments, strict=True):
        edits.append((end.start(), end.start(), frag))
    edits.sort(key=lambda e: e[0])
    out, last = [], 0
    for start, stop, text in edits:
        if start < last:
            return None
        out.append(pes[last:start])
        out.append(text)
        last = stop
    out.append(pes[last:])
    return b"".join(out)


def _looks_signed(data: bytes, ids: list[str]) -> bool:
    """Cheap structural self-check of the spliced output (one parse, no crypto)."""
    try:
        root = xmlsafe.parse_bytes(data)
    except (etree.XMLSyntaxError, xmlsafe.UnsafeXML):
        return False
    found = [b for block in root if block.tag in BLOCKS for b in block if b.tag == "Bordereau"]
    if [b.get("Id") for b in found] != ids:
        return False
    for b in found:
        last = b[-1] if len(b) else None
        if last is None or last.tag != f"{{{DS}}}Signature" or last.get("Id") != f"{b.get('Id')}_SIG_1":
            return False
    for block in root:
        if block.tag in BLOCKS:
            head = block.find(BLOCKS[block.tag])
            infos = head.findall("InfoDematerialisee") if head is not None else []
            if head is not None and [i.get("V") for i in infos] != ["1"]:
                return False
    return True


def _set_infodem_tree(root) -> None:
    for block in root:
        if block.tag not in BLOCKS:
            continue
        head = block.find(BLOCKS[block.tag])
        if head is None:
            continue
        info = head.find("InfoDematerialisee")
        if info is None:
            info = etree.Element("InfoDematerialisee")
            idver = head.find("IdVer")
            if idver is not None:
                info.tail = idver.tail
                idver.addnext(info)
            else:
                head.insert(0, info)
        info.set("V", "1")


class RemoteSignatureRefused(SignatureError):
    """A signature value, a certificate or a prepared state was refused; the message is French."""


@dataclass
class PreparedBordereau:
    """One bordereau's part of a prepared signature: what the signer's key must sign."""

    id: str
    idbord: str | None
    signed_info: str  # inner text of ds:SignedInfo

    @property
    def sig_id(self) -> str:
        return f"{self.id}_SIG_1"


@dataclass
class PreparedPes:
    """Phase 1 of a PES signature, durable (to_json/from_json) so it survives a restart.

    Holds no secret: the certificate is public, the SignedInfo only digests. `document` is the
    PES to sign (optional in the JSON when the caller keeps it in its own store).
    """

    document_sha256: str
    certificate: bytes  # DER
    role: str
    place: str | None
    policy: str
    signing_time: datetime
    xades_namespace: str
    method: str
    declare_ds: bool
    bordereaux: list[PreparedBordereau]
    document: bytes | None = None
    _builder: _Builder | None = field(default=None, repr=False, compare=False)
    _tree: tuple | None = field(default=None, repr=False, compare=False)

    kind = "pes"

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate)

    @property
    def digest_algorithm(self) -> str:
        """Hash the signature method applies to the canonical SignedInfo (sha256, sha1 for 1.4)."""
        return SIGNATURE_METHODS[self.method][1]

    def builder(self) -> _Builder:
        if self._builder is None:
            self._builder = _Builder(
                self.cert, role=self.role, place=self.place, policy=POLICIES[self.policy],
                signing_time=self.signing_time, xades_ns=self.xades_namespace, method=self.method,
            )
        return self._builder

    def to_be_signed(self) -> dict[str, bytes]:
        """{bordereau Id: canonical SignedInfo octets}; the signer hashes and signs each."""
        b = self.builder()
        return {p.id: b.signed_info_c14n(p.signed_info) for p in self.bordereaux}

    def digests(self) -> dict[str, bytes]:
        """{bordereau Id: digest of the canonical SignedInfo}: what a token signs (with DigestInfo for RSA)."""
        return {k: hashlib.new(self.digest_algorithm, v).digest() for k, v in self.to_be_signed().items()}

    def to_dict(self, *, include_document: bool = True) -> dict:
        return {
            "format": "demat-prepared-pes/1",
            "document_sha256": self.document_sha256,
            "certificate": base64.b64encode(self.certificate).decode("ascii"),
            "role": self.role,
            "place": self.place,
            "policy": self.policy,
            "signing_time": self.signing_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "xades_namespace": self.xades_namespace,
            "method": self.method,
            "declare_ds": self.declare_ds,
            "bordereaux": [{"id": p.id, "idbord": p.idbord, "signed_info": p.signed_info} for p in self.bordereaux],
            "document": base64.b64encode(self.document).decode("ascii") if include_document and self.document else None,
        }

    def to_json(self, *, include_document: bool = True) -> str:
        return json.dumps(self.to_dict(include_document=include_document), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> PreparedPes:
        try:
            if data.get("format") != "demat-prepared-pes/1":
                raise ValueError("format")
            prepared = cls(
                document_sha256=str(data["document_sha256"]),
                certificate=base64.b64decode(data["certificate"], validate=True),
                role=str(data["role"]),
                place=data.get("place"),
                policy=str(data["policy"]),
                signing_time=datetime.strptime(data["signing_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                xades_namespace=str(data["xades_namespace"]),
                method=str(data["method"]),
                declare_ds=bool(data["declare_ds"]),
                bordereaux=[PreparedBordereau(str(b["id"]), b.get("idbord"), str(b["signed_info"])) for b in data["bordereaux"]],
                document=base64.b64decode(data["document"], validate=True) if data.get("document") else None,
            )
            x509.load_der_x509_certificate(prepared.certificate)
            if not prepared.bordereaux or any(not _NCNAME.match(b.id) for b in prepared.bordereaux):
                raise ValueError("Id")
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteSignatureRefused(
                f"État de signature préparé illisible ou d'un autre format ({type(exc).__name__}) : "
                "préparez de nouveau la signature du document."
            ) from None
        if prepared.policy not in POLICIES or prepared.method not in SIGNATURE_METHODS or prepared.xades_namespace not in XADES_NAMESPACES:
            raise RemoteSignatureRefused("État de signature préparé incohérent (politique, algorithme ou espace de noms inconnu).")
        return prepared

    @classmethod
    def from_json(cls, text: str | bytes) -> PreparedPes:
        return cls.from_dict(prepared_state_dict(text, "État de signature préparé"))


def prepared_state_dict(text: str | bytes, what: str) -> dict:
    """The JSON object of a stored prepared state, or RemoteSignatureRefused naming `what` (French)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise RemoteSignatureRefused(f"{what} illisible (JSON invalide).") from None
    if not isinstance(data, dict):
        raise RemoteSignatureRefused(f"{what} illisible (objet JSON attendu).")
    return data


def _label(p: PreparedBordereau) -> str:
    return f"bordereau {p.idbord} (Id {p.id})" if p.idbord else f"bordereau d'Id {p.id}"


def prepare_pes(
    pes: bytes,
    signer_cert: x509.Certificate | bytes,
    *,
    role: str,
    place: str | None = None,
    policy: str = "1.7",
    signing_time: datetime | None = None,
    xades_namespace: str = XADES_111,
    trust=None,
    expected=None,
) -> PreparedPes:
    """Phase 1: per bordereau, the XAdES-EPES SignedInfo for the signer whose certificate is known.

    The certificate is checked first (validity now and at the signing time, signing key usage,
    and, when `trust` (a trust.TrustConfig) is given, its chain and CRL); `expected`
    (trust.ExpectedSigner) refuses a certificate that is not the step's official's.
    """
    if policy not in POLICIES:
        raise SignatureError(f"Politique de signature inconnue : « {policy} » (attendu : {', '.join(POLICIES)}).")
    if xades_namespace not in XADES_NAMESPACES:
        raise SignatureError(f"Espace de noms XAdES non pris en charge : {xades_namespace}")
    cert = signer_cert if isinstance(signer_cert, x509.Certificate) else _load_cert(signer_cert)
    when = _utc(signing_time)
    _trust.check_signer(cert, trust, at=when, expected=expected)
    root = xmlsafe.parse_bytes(pes)
    bordereaux = _bordereaux(root)
    builder = _Builder(cert, role=role, place=place, policy=POLICIES[policy], signing_time=when, xades_ns=xades_namespace)
    parts = []
    for b in bordereaux:
        bid = b.get("Id")
        target = digest_b64(canonicalize(b, EXC_C14N), builder.digest)
        idbord = b.find("BlocBordereau/IdBord")
        si = builder.signed_info(f"{bid}_SIG_1", f"#{bid}", target, enveloped=True)
        parts.append(PreparedBordereau(bid, idbord.get("V") if idbord is not None else None, si))
    prepared = PreparedPes(
        document_sha256=hashlib.sha256(pes).hexdigest(),
        certificate=cert.public_bytes(serialization.Encoding.DER),
        role=role, place=place, policy=policy, signing_time=when, xades_namespace=xades_namespace,
        method=builder.method, declare_ds=root.nsmap.get("ds") != DS, bordereaux=parts, document=pes,
    )
    prepared._builder = builder
    prepared._tree = (root, bordereaux)
    return prepared


def _load_cert(der_or_pem: bytes) -> x509.Certificate:
    try:
        if der_or_pem.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(der_or_pem)
        return x509.load_der_x509_certificate(der_or_pem)
    except ValueError:
        raise RemoteSignatureRefused("Le certificat du signataire est illisible (ni DER ni PEM).") from None


def check_signature_values(prepared: PreparedPes, values: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, str]]:
    """Verify raw values against the certificate's key: (accepted, refused {Id: French reason}).

    Lets the platform keep what verifies when a batch arrives in parts (token removed mid-batch).
    """
    public_key = prepared.cert.public_key()
    tbs = prepared.to_be_signed()
    by_id = {p.id: p for p in prepared.bordereaux}
    accepted: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    for bid, value in values.items():
        part = by_id.get(bid)
        if part is None:
            refused[bid] = f"Signature reçue pour « {bid} », qui n'est pas un bordereau de ce PES : ignorée."
            continue
        if not isinstance(value, bytes) or not verify_bytes(public_key, value, tbs[bid], prepared.method):
            refused[bid] = (
                f"La valeur de signature du {_label(part)} ne correspond pas à la clé du certificat "
                f"« {common_name(prepared.cert)} » : elle est refusée, rien n'est transmis. "
                "Signez de nouveau ce bordereau avec le certificat annoncé."
            )
            continue
        accepted[bid] = value
    return accepted, refused


def assemble_pes(prepared: PreparedPes, signature_values: dict[str, bytes], *, pes: bytes | None = None) -> bytes:
    """Phase 2: the signed PES, after every value verified against the certificate's public key.

    Same output as the one-phase sign_pes (it is its code path). Idempotent: the same prepared
    state and values always give the same bytes. Raises RemoteSignatureRefused (French) naming
    the bordereau when a value is missing or does not verify.
    """
    pes = prepared.document if pes is None else pes
    if pes is None:
        raise RemoteSignatureRefused("Le PES préparé n'est pas joint : fournissez le document d'origine pour assembler la signature.")
    if hashlib.sha256(pes).hexdigest() != prepared.document_sha256:
        raise RemoteSignatureRefused(
            "Le PES fourni n'est pas celui dont la signature a été préparée (empreinte SHA-256 différente) : assemblage refusé."
        )
    accepted, refused = check_signature_values(prepared, signature_values)
    if refused:
        raise RemoteSignatureRefused(" ".join(refused.values()))
    missing = [p for p in prepared.bordereaux if p.id not in accepted]
    if missing:
        raise RemoteSignatureRefused(
            f"Signature manquante pour {len(missing)} bordereau(x) : {', '.join(_label(p) for p in missing)}. "
            "Le PES ne peut partir que lorsque tous ses bordereaux sont signés."
        )
    builder = prepared.builder()
    if prepared._tree is not None:
        root, bordereaux = prepared._tree
        prepared._tree = None  # the fallback below may modify the tree: use it once
    else:
        root = xmlsafe.parse_bytes(pes)
        bordereaux = _bordereaux(root)
        if [b.get("Id") for b in bordereaux] != [p.id for p in prepared.bordereaux]:
            raise RemoteSignatureRefused("Les bordereaux du PES ne correspondent pas à la signature préparée.")
    encoding = root.getroottree().docinfo.encoding or "UTF-8"
    ids = [p.id for p in prepared.bordereaux]

    def fragments(declare_ds: bool) -> list[str]:
        return [builder.signature(p.sig_id, p.signed_info, accepted[p.id], declare_ds=declare_ds) for p in prepared.bordereaux]

    frags = fragments(prepared.declare_ds)
    spliced = _splice(pes, root, bordereaux, [f.encode(encoding, "xmlcharrefreplace") for f in frags])
    if spliced is not None and _looks_signed(spliced, ids):
        return spliced

    # Fallback: insert into the tree and serialise once, keeping the original declaration.
    if not prepared.declare_ds:  # an element parsed alone must declare the prefix it uses
        frags = fragments(declare_ds=True)
    parser = xmlsafe.parser()
    for b, frag in zip(bordereaux, frags, strict=True):
        b.append(etree.fromstring(frag, parser))
    _set_infodem_tree(root)
    decl = _DECL.match(pes)
    body = etree.tostring(root.getroottree(), encoding=encoding, xml_declaration=False)
    head = (decl.group(0).lstrip(b"\xef\xbb\xbf").strip() + b"\n") if decl else b""
    return head + body


def sign_pes_with(
    pes: bytes,
    signer: Signer,
    *,
    role: str,
    place: str | None = None,
    policy: str = "1.7",
    signing_time: datetime | None = None,
    xades_namespace: str = XADES_111,
) -> bytes:
    """Sign every bordereau with an already-loaded signer: prepare, sign locally, assemble."""
    prepared = prepare_pes(pes, signer.cert, role=role, place=place, policy=policy,
                           signing_time=signing_time, xades_namespace=xades_namespace)
    values = {bid: sign_bytes(signer.key, tbs, prepared.method) for bid, tbs in prepared.to_be_signed().items()}
    return assemble_pes(prepared, values)


def sign_pes(
    pes: bytes,
    p12_path: str | Path,
    password: bytes,
    *,
    role: str,
    place: str | None = None,
    policy: str = "1.7",
    signing_time: datetime | None = None,
    xades_namespace: str = XADES_111,
) -> bytes:
    """Sign every bordereau of a PES_Aller (XAdES-EPES, Hélios policy 1.7 by default).

    Raises CertificateRefused (expired, not yet valid, no signing usage, wrong password) or
    SignatureError (not a PES_Aller, already signed, missing Id), both with French messages.
    """
    return sign_pes_with(pes, load_signer(p12_path, password), role=role, place=place, policy=policy,
                         signing_time=signing_time, xades_namespace=xades_namespace)
