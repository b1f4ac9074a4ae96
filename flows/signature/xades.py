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
import re
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape  # nosec B406 - escaping only, nothing is parsed here

from cryptography.hazmat.primitives import hashes, serialization
from lxml import etree

from flows import xmlsafe
from flows.signature.certs import Signer, check_signing_certificate, load_signer
from flows.signature.dsig import (
    DIGEST_URI,
    DS,
    ENVELOPED,
    EXC_C14N,
    PES_ALLER,
    POLICIES,
    XADES_111,
    XADES_NAMESPACES,
    Policy,
    canonicalize,
    digest_b64,
    sign_bytes,
    signature_method_for,
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
    """Everything that is the same for every bordereau of one signing run, prepared once."""

    def __init__(
        self,
        signer: Signer,
        *,
        role: str,
        place: str | None,
        policy: Policy | None,
        signing_time: datetime,
        xades_ns: str,
    ) -> None:
        self.key = signer.key
        self.policy = policy
        self.xades_ns = xades_ns
        digest = policy.digest if policy else "sha256"
        self.digest = digest
        self.digest_uri = DIGEST_URI[digest]
        self.method = signature_method_for(signer.key, policy or POLICIES["1.7"])
        der = signer.cert.public_bytes(serialization.Encoding.DER)
        self.cert_b64 = wrap76(base64.b64encode(der).decode("ascii"))
        cert_digest = base64.b64encode(
            signer.cert.fingerprint(hashes.SHA1() if digest == "sha1" else hashes.SHA256())  # noqa: S303  # nosec B303 - policy 1.4 mandates SHA-1
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
            f"<xad:IssuerSerial><ds:X509IssuerName>{escape(signer.cert.issuer.rfc4514_string())}</ds:X509IssuerName>"
            f"<ds:X509SerialNumber>{signer.cert.serial_number}</ds:X509SerialNumber></xad:IssuerSerial>"
            "</xad:Cert></xad:SigningCertificate>"
            f"{policy_xml}{_place_xml(place)}"
            "<xad:SignerRole><xad:ClaimedRoles>"
            f"<xad:ClaimedRole>{_text(role, 'Le rôle du signataire (ClaimedRole)')}</xad:ClaimedRole>"
            "</xad:ClaimedRoles></xad:SignerRole>"
        )
        self._parser = xmlsafe.parser()

    def fragment(
        self, sig_id: str, target_uri: str, target_digest: str, *, enveloped: bool, declare_ds: bool, xml_target: bool = True
    ) -> str:
        """The ds:Signature text for one target whose (transformed) digest is already known.

        xml_target=False: the target is raw bytes (detached file), referenced without transforms.
        """
        x = self.xades_ns
        sp_id = f"{sig_id}_SP"
        sp_inner = f"<xad:SignedSignatureProperties>{self.props_tail}</xad:SignedSignatureProperties>"
        sp_alone = f'<xad:SignedProperties xmlns:xad="{x}" xmlns:ds="{DS}" Id="{sp_id}">{sp_inner}</xad:SignedProperties>'
        sp_digest = digest_b64(canonicalize(etree.fromstring(sp_alone, self._parser), EXC_C14N), self.digest)
        transforms = f'<ds:Transform Algorithm="{ENVELOPED}"/>' if enveloped else ""
        transforms += f'<ds:Transform Algorithm="{EXC_C14N}"/>'
        transforms = f"<ds:Transforms>{transforms}</ds:Transforms>" if xml_target else ""
        si_inner = (
            f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>'
            f'<ds:SignatureMethod Algorithm="{self.method}"/>'
            f'<ds:Reference URI="{escape(target_uri, {chr(34): "&quot;"})}">{transforms}'
            f'<ds:DigestMethod Algorithm="{self.digest_uri}"/><ds:DigestValue>{target_digest}</ds:DigestValue></ds:Reference>'
            f'<ds:Reference Type="{x}SignedProperties" URI="#{sp_id}"><ds:Transforms>'
            f'<ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms>'
            f'<ds:DigestMethod Algorithm="{self.digest_uri}"/><ds:DigestValue>{sp_digest}</ds:DigestValue></ds:Reference>'
        )
        si_alone = f'<ds:SignedInfo xmlns:ds="{DS}">{si_inner}</ds:SignedInfo>'
        si_c14n = canonicalize(etree.fromstring(si_alone, self._parser), EXC_C14N)
        value = wrap76(base64.b64encode(sign_bytes(self.key, si_c14n, self.method)).decode("ascii"))
        ds_decl = f' xmlns:ds="{DS}"' if declare_ds else ""
        return (
            f'<ds:Signature{ds_decl} Id="{sig_id}"><ds:SignedInfo>{si_inner}</ds:SignedInfo>'
            f'<ds:SignatureValue Id="{sig_id}_SV">{value}</ds:SignatureValue>'
            f"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{self.cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
            f'<ds:Object><xad:QualifyingProperties xmlns="{x}" xmlns:xad="{x}" Target="#{sig_id}">'
            f'<xad:SignedProperties Id="{sp_id}">{sp_inner}</xad:SignedProperties>'
            "</xad:QualifyingProperties></ds:Object></ds:Signature>"
        )


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
    """Sign every bordereau with an already-loaded signer (batch signing reuses one Signer)."""
    if policy not in POLICIES:
        raise SignatureError(f"Politique de signature inconnue : « {policy} » (attendu : {', '.join(POLICIES)}).")
    if xades_namespace not in XADES_NAMESPACES:
        raise SignatureError(f"Espace de noms XAdES non pris en charge : {xades_namespace}")
    when = _utc(signing_time)
    # valid now AND at the claimed signing time: a back-dated SigningTime cannot revive an expired certificate
    check_signing_certificate(signer.cert)
    check_signing_certificate(signer.cert, at=when)
    root = xmlsafe.parse_bytes(pes)
    bordereaux = _bordereaux(root)
    builder = _Builder(
        signer, role=role, place=place, policy=POLICIES[policy], signing_time=when, xades_ns=xades_namespace
    )
    encoding = root.getroottree().docinfo.encoding or "UTF-8"
    root_has_ds = root.nsmap.get("ds") == DS
    digests = [digest_b64(canonicalize(b, EXC_C14N), builder.digest) for b in bordereaux]
    ids = [b.get("Id") for b in bordereaux]

    def fragments(declare_ds: bool) -> list[str]:
        return [builder.fragment(f"{bid}_SIG_1", f"#{bid}", d, enveloped=True, declare_ds=declare_ds)
                for bid, d in zip(ids, digests, strict=True)]

    frags = fragments(declare_ds=not root_has_ds)
    spliced = _splice(pes, root, bordereaux, [f.encode(encoding, "xmlcharrefreplace") for f in frags])
    if spliced is not None and _looks_signed(spliced, ids):
        return spliced

    # Fallback: insert into the tree and serialise once, keeping the original declaration.
    if root_has_ds:  # an element parsed alone must declare the prefix it uses
        frags = fragments(declare_ds=True)
    parser = xmlsafe.parser()
    for b, frag in zip(bordereaux, frags, strict=True):
        b.append(etree.fromstring(frag, parser))
    _set_infodem_tree(root)
    decl = _DECL.match(pes)
    body = etree.tostring(root.getroottree(), encoding=encoding, xml_declaration=False)
    head = (decl.group(0).lstrip(b"\xef\xbb\xbf").strip() + b"\n") if decl else b""
    return head + body


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
