"""Verify the XAdES signatures of a PES_Aller, bordereau by bordereau, as the DGFiP would.

Two levels, reported separately:
- integrity ("intact"): reference digests (bordereau after the enveloped transform + c14n, and
  SignedProperties) and SignatureValue with the embedded certificate's key. Always errors.
- qualification: certificate valid at SigningTime with signing usage, chain to the trust store,
  policy 1.4/1.7 with its exact hash (base64 compared as bytes: padding optional), signer role
  present, SigningCertificate matches. Warnings, or errors when strict=True; except a certificate
  outside its validity at SigningTime, always an error: Hélios refuses it (ERREUR_CERTIFICAT),
  so `demat verify` says NON CONFORME and exits 1 whatever --strict says. A CA link signed with
  SHA-1 (the DGFiP's own chain) is accepted, as `openssl verify` accepts it, with a warning.
Every Reference is resolved by Id across the whole document and must designate the bordereau
holding the signature (and the SignedProperties inside it): a signature moved from another
bordereau, or an Id duplicated to hide a forged element (signature wrapping), is refused.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from flows import xmlsafe
from flows.findings import Finding, Report
from flows.helios.xsdtext import error_fr
from flows.signature.certs import (
    CertificateRefused,
    build_chain,
    check_signing_certificate,
    common_name,
    load_trust_store,
)
from flows.signature.dsig import (
    C14N,
    C14N_METHODS,
    DIGESTS,
    DS,
    ENVELOPED,
    PES_ALLER,
    POLICY_BY_ID,
    SIGNATURE_METHODS,
    XADES_NAMESPACES,
    canonicalize,
    verify_bytes,
)

BLOCKS = ("PES_DepenseAller", "PES_RecetteAller")
EXC_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"
INTEGRITY = "integrite"
QUALIF = "qualification"
REFUS = "refus"  # always an error: Hélios refuses it whatever the strictness asked here
AVIS = "avis"  # always a warning: accepted, but the agent should know
# What Hélios does with a certificate outside its validity at SigningTime: the DGFiP signature
# policy (PES V2, §certificats) requires a certificate valid at signing time, and Hélios answers
# ERREUR_CERTIFICAT; so does demat, whatever --strict says.
ALWAYS_REFUSED = {"SIG-CERT-EXPIRE", "SIG-CERT-PAS-ENCORE"}


def _ds(tag: str) -> str:
    return f"{{{DS}}}{tag}"


@dataclass
class SignatureResult:
    """One bordereau (or one detached document) and what its signature proves."""

    bordereau_id: str | None
    intact: bool = False
    findings: list[Finding] = field(default_factory=list)
    signer: str | None = None
    role: str | None = None
    signing_time: datetime | None = None
    policy: str | None = None
    certificate_not_after: datetime | None = None
    idbord: str | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return self.intact and not self.errors

    def to_text(self) -> str:
        label = f"Bordereau {self.idbord or ''} (Id {self.bordereau_id})" if self.bordereau_id else "Document"
        if not self.intact:
            state = "SIGNATURE INVALIDE OU ABSENTE"
        elif self.errors:
            state = "intègre mais NON CONFORME"
        else:
            state = "signature valide"
        line = f"{label} : {state}"
        if self.signer:
            when = self.signing_time.strftime("%d/%m/%Y %H:%M UTC") if self.signing_time else "date inconnue"
            line += f" — signé par {self.signer}" + (f" ({self.role})" if self.role else "") + f" le {when}"
            if self.policy:
                line += f", politique {self.policy}"
        body = "\n".join("  " + f.to_text().replace("\n", "\n  ") for f in self.findings)
        return line + ("\n" + body if body else "")


BordereauResult = SignatureResult


@dataclass
class VerifyReport:
    results: list[SignatureResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # document level
    strict: bool = False

    @property
    def intact(self) -> bool:
        return bool(self.results) and all(r.intact for r in self.results)

    @property
    def ok(self) -> bool:
        return self.intact and not any(r.errors for r in self.results) and not any(
            f.severity == "error" for f in self.findings
        )

    @property
    def all_findings(self) -> list[Finding]:
        return self.findings + [f for r in self.results for f in r.findings]

    def to_report(self, file: str = "") -> Report:
        """The shared Report shape (kind "pes_signature") for the CLI, the UI and the journal."""
        return Report(
            file=file,
            kind="pes_signature",
            findings=self.all_findings,
            summary={
                "bordereaux": len(self.results),
                "intacts": sum(1 for r in self.results if r.intact),
                "intact": self.intact,
                "strict": self.strict,
                "signataires": sorted({r.signer for r in self.results if r.signer}),
                "politiques": sorted({r.policy for r in self.results if r.policy}),
            },
        )

    def to_text(self) -> str:
        n = len(self.results)
        good = sum(1 for r in self.results if r.intact)
        head = f"Vérification des signatures : {n} bordereau(x), {good} intègre(s)"
        head += " — RÉSULTAT : " + ("CONFORME" if self.ok else "NON CONFORME")
        if self.strict:
            head += " (contrôle strict : certificat, chaîne, date, politique)"
        lines = [head]
        lines += [f.to_text() for f in self.findings]
        lines += [r.to_text() for r in self.results]
        return "\n".join(lines) + "\n"


class _Ctx:
    """Per-document state: the Id index and the trust anchors."""

    def __init__(self, root, trust: list[x509.Certificate], strict: bool, at: datetime | None, detached: dict):
        self.root = root
        self.trust = trust
        self.strict = strict
        self.at = at
        self.detached = detached
        self.require_policy = not detached  # PES: XAdES-EPES (Hélios policy); detached acte: BES is enough
        self.certs: dict[str, x509.Certificate | None] = {}  # one parse per distinct certificate
        self.cert_checks: dict[tuple, list[tuple[str, str, str]]] = {}  # (fingerprint, date) -> problems
        self.ids: dict[str, list[etree._Element]] = {}
        for el in root.iter():
            if isinstance(el.tag, str):
                v = el.get("Id")
                if v is not None:
                    self.ids.setdefault(v, []).append(el)


def _finding(result: SignatureResult, rule: str, message: str, *, fix: str = "", kind: str, strict: bool, value: str = ""):
    severity = "error" if kind in (INTEGRITY, REFUS) or (strict and kind != AVIS) else "warning"
    place = f"bordereau {result.idbord or result.bordereau_id}" if result.bordereau_id else "document signé"
    result.findings.append(
        Finding(rule=rule, message=message, fix=fix, place=place, value=value, severity=severity, layer="signature")
    )


class _Without:
    """Temporarily detach the signature (enveloped-signature transform), keeping its tail text."""

    def __init__(self, sig):
        self.sig = sig

    def __enter__(self):
        sig = self.sig
        self.parent = sig.getparent()
        self.index = self.parent.index(sig)
        self.tail = sig.tail
        self.prev = sig.getprevious()
        if self.tail:
            if self.prev is not None:
                self.prev_tail = self.prev.tail
                self.prev.tail = (self.prev.tail or "") + self.tail
            else:
                self.parent_text = self.parent.text
                self.parent.text = (self.parent.text or "") + self.tail
        self.parent.remove(sig)
        return self

    def __exit__(self, *exc):
        if self.tail:
            if self.prev is not None:
                self.prev.tail = self.prev_tail
            else:
                self.parent.text = self.parent_text
        self.parent.insert(self.index, self.sig)
        self.sig.tail = self.tail
        return False


def _reference_octets(ref, sig, ctx: _Ctx) -> tuple[bytes | None, str | None, etree._Element | None]:
    """(octets to digest, problem in French, target element) for one ds:Reference."""
    uri = ref.get("URI")
    transforms = [t for t in ref.findall(f"{_ds('Transforms')}/{_ds('Transform')}")]
    algos = [t.get("Algorithm") for t in transforms]
    if uri is None or uri == "":
        return None, "référence au document entier (URI vide) : non admise pour un PES", None
    if not uri.startswith("#"):
        if uri in ctx.detached and not algos:
            return ctx.detached[uri], None, None
        return None, f"référence externe « {uri} » non admise", None
    targets = ctx.ids.get(uri[1:], [])
    if len(targets) != 1:
        what = "introuvable" if not targets else f"porté par {len(targets)} éléments (tentative de substitution ?)"
        return None, f"l'identifiant « {uri[1:]} » est {what}", None
    target = targets[0]
    enveloped = False
    method = C14N
    prefixes = None
    for t, alg in zip(transforms, algos, strict=False):
        if alg == ENVELOPED:
            enveloped = True
        elif alg in C14N_METHODS:
            method = alg
            inc = t.find(f"{{{EXC_NS}}}InclusiveNamespaces")
            prefixes = inc.get("PrefixList", "").split() if inc is not None else None
        else:
            return None, f"transformation non admise : {alg}", target
    if enveloped and not any(a is sig for a in target.iter(_ds("Signature"))):
        enveloped = False  # the transform only removes the signature when it is inside the target
    if enveloped:
        with _Without(sig):
            return canonicalize(target, method, prefixes), None, target
    return canonicalize(target, method, prefixes), None, target


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def verify_signature_element(
    sig: etree._Element,
    ctx: _Ctx,
    result: SignatureResult,
    *,
    expected_target: etree._Element | None,
) -> None:
    """Check one ds:Signature into `result` (findings, intact, signer...)."""
    strict = ctx.strict
    si = sig.find(_ds("SignedInfo"))
    if si is None:
        _finding(result, "SIG-STRUCTURE", "La signature n'a pas d'élément SignedInfo.", kind=INTEGRITY, strict=strict)
        return
    c14n_el = si.find(_ds("CanonicalizationMethod"))
    method_el = si.find(_ds("SignatureMethod"))
    c14n = c14n_el.get("Algorithm") if c14n_el is not None else None
    method = method_el.get("Algorithm") if method_el is not None else None
    if c14n not in C14N_METHODS or method not in SIGNATURE_METHODS:
        _finding(
            result,
            "SIG-ALGO",
            "Algorithme de canonisation ou de signature non pris en charge.",
            value=f"{c14n} / {method}",
            kind=INTEGRITY,
            strict=strict,
        )
        return

    # QualifyingProperties / SignedProperties inside this very signature
    qp = None
    for ns in XADES_NAMESPACES:
        qp = sig.find(f"{_ds('Object')}/{{{ns}}}QualifyingProperties")
        if qp is not None:
            break
    xns = etree.QName(qp).namespace if qp is not None else None
    sp = qp.find(f"{{{xns}}}SignedProperties") if qp is not None else None

    integrity_ok = True
    digest_failed: list[str] = []
    covered_target = covered_sp = False
    refs = si.findall(_ds("Reference"))
    for ref in refs:
        dm = ref.find(_ds("DigestMethod"))
        dv = ref.find(_ds("DigestValue"))
        alg = DIGESTS.get(dm.get("Algorithm") if dm is not None else "")
        if alg is None or dv is None:
            _finding(result, "SIG-ALGO", "Algorithme d'empreinte non pris en charge.", kind=INTEGRITY, strict=strict)
            integrity_ok = False
            continue
        octets, problem, target = _reference_octets(ref, sig, ctx)
        if problem:
            _finding(result, "SIG-REFERENCE", f"Référence de signature refusée : {problem}.", kind=INTEGRITY, strict=strict)
            integrity_ok = False
            continue
        expected = (dv.text or "").strip()
        actual = base64.b64encode(hashlib.new(alg, octets).digest()).decode("ascii")
        uri = ref.get("URI") or ""
        if target is not None and target is sp:
            covered_sp = True
            rtype = ref.get("Type", "")
            if not rtype.endswith("#SignedProperties"):
                _finding(result, "SIG-STRUCTURE", "La référence aux propriétés signées n'a pas le Type attendu.", kind=QUALIF, strict=strict, value=rtype)
            what = "les propriétés signées (date, certificat, rôle, politique)"
        elif target is not None and target is expected_target:
            covered_target = True
            what = f"le contenu du bordereau {result.idbord or ''} (Id {result.bordereau_id})".replace("  ", " ")
        elif target is None and expected_target is None:
            covered_target = True
            what = "le document signé"
        else:
            what = "un élément qui n'est pas ce bordereau"
            _finding(
                result,
                "SIG-REFERENCE",
                f"La signature référence « {ref.get('URI')} », qui n'est ni ce bordereau ni ses propriétés signées.",
                fix="Une signature de bordereau ne peut pas être déplacée d'un bordereau à un autre.",
                kind=INTEGRITY,
                strict=strict,
            )
            integrity_ok = False
        if not _same_base64(expected, actual):
            integrity_ok = False
            digest_failed.append(uri)
            _finding(
                result,
                "SIG-EMPREINTE",
                f"Contenu signé modifié : l'empreinte de la référence « {uri} » ne correspond plus,"
                f" {what} a été modifié après la signature.",
                fix="Ne modifiez pas un document signé : reprenez le fichier d'origine ou faites signer à nouveau"
                " le bordereau (Hélios le refuserait : ERREUR_SIGNATURE_BORDEREAU_INVALIDE).",
                kind=INTEGRITY,
                strict=strict,
                value=f"{uri} : attendu {expected}, calculé {actual}",
            )
    if not covered_target:
        integrity_ok = False
        _finding(result, "SIG-REFERENCE", "La signature ne couvre pas ce bordereau.", kind=INTEGRITY, strict=strict)
    if sp is None or not covered_sp:
        _finding(
            result,
            "SIG-XADES",
            "Propriétés signées XAdES absentes ou non couvertes par la signature (XAdES-EPES exigé).",
            kind=INTEGRITY,
            strict=strict,
        )
        integrity_ok = False

    # certificate from KeyInfo
    cert_els = sig.findall(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}")
    certs = []
    for el in cert_els:
        text = "".join((el.text or "").split())
        if text not in ctx.certs:
            try:
                ctx.certs[text] = x509.load_der_x509_certificate(base64.b64decode(text))
            except ValueError:
                ctx.certs[text] = None
        if ctx.certs[text] is not None:
            certs.append(ctx.certs[text])
    if not certs:
        _finding(result, "SIG-CERT-ABSENT", "Le certificat du signataire est absent de la signature.", kind=INTEGRITY, strict=strict)
        return
    cert = certs[0]
    result.signer = common_name(cert)
    result.certificate_not_after = cert.not_valid_after_utc

    sv = sig.find(_ds("SignatureValue"))
    try:
        sig_bytes = base64.b64decode("".join((sv.text or "").split()), validate=True) if sv is not None else b""
    except ValueError:
        sig_bytes = b""
    si_octets = canonicalize(si, c14n)
    if not verify_bytes(cert.public_key(), sig_bytes, si_octets, method):
        integrity_ok = False
        uris = ", ".join(f"« {r.get('URI')} »" for r in refs) or "aucune"
        if digest_failed:
            text = "La valeur de signature ne correspond pas non plus (conséquence du contenu modifié ci-dessus)."
        else:
            text = (
                "Contenu signé modifié : la valeur de signature ne correspond pas aux informations signées"
                f" (SignedInfo, références {uris}) avec la clé du certificat. Les empreintes ont été recalculées"
                f" ou le SignedInfo retouché après la signature du bordereau {result.idbord or result.bordereau_id} :"
                " signature invalide."
            )
        _finding(
            result,
            "SIG-VALEUR",
            text,
            fix="Ne modifiez pas un document signé : reprenez le fichier d'origine ou faites signer à nouveau le bordereau.",
            kind=INTEGRITY,
            strict=strict,
        )
    result.intact = integrity_ok
    if sp is not None:
        _check_properties(sp, xns, cert, certs[1:], sig, qp, ctx, result)


def _certificate_problems(cert, extra_certs, when: datetime, ctx: _Ctx) -> list[tuple[str, str, str]]:
    """Validity, usage and chain of one certificate at one date; cached (500 bordereaux, 1 signer)."""
    key = (cert.fingerprint(hashes.SHA256()), when, tuple(c.fingerprint(hashes.SHA256()) for c in extra_certs))
    if key in ctx.cert_checks:
        return ctx.cert_checks[key]
    out: list[tuple[str, str, str]] = []
    try:
        check_signing_certificate(cert, at=when)
    except CertificateRefused as exc:
        msg = str(exc)
        rule = "SIG-CERT-EXPIRE" if "expiré" in msg else "SIG-CERT-PAS-ENCORE" if "pas encore" in msg else "SIG-CERT-USAGE"
        out.append((rule, msg, ""))
    if not ctx.trust:
        out.append(
            (
                "SIG-CERT-CHAINE",
                "Aucun magasin de confiance fourni : l'autorité de certification n'a pas été vérifiée.",
                "Fournissez le magasin des AC reconnues par la DGFiP (par exemple CA_RGS3.zip).",
            )
        )
    else:
        notes: list[str] = []
        _chain, problems = build_chain(cert, ctx.trust, intermediates=extra_certs, at=when, notes=notes)
        out.extend(
            (
                "SIG-CERT-SHA1",
                f"Chaîne de certification acceptée, mais {n}.",
                "Rien à faire pour ce fichier ; l'autorité de certification devrait passer à SHA-256.",
            )
            for n in notes
        )
        out.extend(
            (
                "SIG-CERT-CHAINE",
                f"Chaîne de certification non reconnue : {p}.",
                "Le certificat doit être délivré par une AC référencée RGS ou par l'AC de la DGFiP.",
            )
            for p in problems
        )
    ctx.cert_checks[key] = out
    return out


def _check_properties(sp, xns: str, cert, extra_certs, sig, qp, ctx: _Ctx, result: SignatureResult) -> None:
    strict = ctx.strict

    def x(path: str) -> str:
        return "/".join(f"{{{xns}}}{p}" if not p.startswith("ds:") else _ds(p[3:]) for p in path.split("/"))

    ssp = sp.find(x("SignedSignatureProperties"))
    if ssp is None:
        _finding(result, "SIG-XADES", "SignedSignatureProperties absent.", kind=QUALIF, strict=strict)
        return
    if qp.get("Target") != f"#{sig.get('Id')}":
        _finding(result, "SIG-XADES", "QualifyingProperties/@Target ne désigne pas cette signature.", kind=QUALIF, strict=strict, value=qp.get("Target") or "")

    signing_time = _ts(ssp.findtext(x("SigningTime")))
    result.signing_time = signing_time
    if signing_time is None:
        _finding(result, "SIG-DATE", "Date de signature (SigningTime) absente ou illisible.", kind=QUALIF, strict=strict)
    now = datetime.now(UTC)
    if signing_time and signing_time > (ctx.at or now):
        _finding(result, "SIG-DATE", "La date de signature est dans le futur.", kind=QUALIF, strict=strict, value=signing_time.isoformat())
    when = ctx.at or signing_time or now

    # SigningCertificate must designate the certificate that signed
    cd = ssp.find(x("SigningCertificate/Cert/CertDigest"))
    serial = ssp.findtext(x("SigningCertificate/Cert/IssuerSerial/ds:X509SerialNumber"))
    if cd is None:
        _finding(result, "SIG-CERT-DESIGNATION", "SigningCertificate absent des propriétés signées.", kind=QUALIF, strict=strict)
    else:
        dm = cd.find(x("DigestMethod"))
        alg = DIGESTS.get(dm.get("Algorithm") if dm is not None else "")
        expected = (cd.findtext(x("DigestValue")) or "").strip()
        actual = base64.b64encode(hashlib.new(alg or "sha256", cert.public_bytes(Encoding.DER)).digest()).decode()
        if alg is None or expected != actual or (serial and serial.strip() != str(cert.serial_number)):
            _finding(
                result,
                "SIG-CERT-DESIGNATION",
                "Le certificat désigné dans les propriétés signées n'est pas celui qui a signé.",
                kind=QUALIF,
                strict=strict,
            )

    for rule, msg, fix in _certificate_problems(cert, extra_certs, when, ctx):
        if rule in ALWAYS_REFUSED:
            msg += (" Hélios refuse une signature dont le certificat n'était pas valide à la date de signature"
                    " (ERREUR_CERTIFICAT) : demat la refuse aussi.")
            fix = fix or "Faire signer à nouveau avec un certificat valide."
        kind = REFUS if rule in ALWAYS_REFUSED else AVIS if rule == "SIG-CERT-SHA1" else QUALIF
        _finding(result, rule, msg, fix=fix, kind=kind, strict=strict)

    pid = ssp.find(x("SignaturePolicyIdentifier/SignaturePolicyId"))
    if pid is None and ctx.require_policy:
        _finding(result, "SIG-POLITIQUE", "Identifiant de politique de signature absent (XAdES-EPES exigé).", kind=QUALIF, strict=strict)
    elif pid is not None:
        ident = (pid.findtext(x("SigPolicyId/Identifier")) or "").strip()
        known = POLICY_BY_ID.get(ident)
        hv = (pid.findtext(x("SigPolicyHash/DigestValue")) or "").strip()
        hm = pid.find(x("SigPolicyHash/DigestMethod"))
        halg = DIGESTS.get(hm.get("Algorithm") if hm is not None else "")
        if known is None:
            _finding(result, "SIG-POLITIQUE", "Politique de signature inconnue (attendu : Hélios 1.4 ou 1.7).", kind=QUALIF, strict=strict, value=ident)
        else:
            result.policy = known.version
            if not _same_base64(hv, known.hash_value) or halg != known.hash_algorithm:
                _finding(result, "SIG-POLITIQUE", f"L'empreinte de la politique {known.version} est incorrecte.", kind=QUALIF, strict=strict, value=hv)

    roles = [(r.text or "").strip() for r in ssp.findall(x("SignerRole/ClaimedRoles/ClaimedRole"))]
    roles = [r for r in roles if r]
    if roles:
        result.role = ", ".join(roles)
    else:
        _finding(
            result,
            "SIG-ROLE",
            "La qualité du signataire (SignerRole/ClaimedRole) est absente.",
            fix="Le rôle (Maire, Ordonnateur...) est obligatoire selon la politique Hélios.",
            kind=QUALIF,
            strict=strict,
        )


def _b64(text: str) -> bytes | None:
    """Decode base64 leniently about padding and whitespace (some signers omit the final '=')."""
    clean = "".join((text or "").split())
    clean += "=" * (-len(clean) % 4)
    try:
        return base64.b64decode(clean, validate=True)
    except ValueError:
        return None


def _same_base64(found: str, expected: str) -> bool:
    a, b = _b64(found), _b64(expected)
    return a is not None and a == b


def _trust(trust_store) -> list[x509.Certificate]:
    if not trust_store:
        return []
    if isinstance(trust_store, (str, Path, bytes, x509.Certificate)):
        trust_store = [trust_store]
    return load_trust_store(list(trust_store))


def verify_pes(
    pes: bytes,
    *,
    trust_store: Iterable = (),
    strict: bool = False,
    at: datetime | None = None,
) -> VerifyReport:
    """Verify every bordereau's signature. `at` overrides the date used for certificate checks
    (default: each signature's SigningTime, as the Hélios policy requires)."""
    report = VerifyReport(strict=strict)
    try:
        root = xmlsafe.parse_bytes(pes)
    except (etree.XMLSyntaxError, xmlsafe.UnsafeXML) as exc:
        report.findings.append(
            Finding("SIG-DOC-LECTURE", f"Le fichier n'est pas un XML lisible : {exc if isinstance(exc, xmlsafe.UnsafeXML) else error_fr(exc)}", layer="signature")
        )
        return report
    if root.tag != f"{{{PES_ALLER}}}PES_Aller":
        report.findings.append(Finding("SIG-DOC-LECTURE", "Le fichier n'est pas un PES_Aller.", layer="signature"))
        return report
    ctx = _Ctx(root, _trust(trust_store), strict, at, {})
    bordereaux = [b for block in root if block.tag in BLOCKS for b in block if b.tag == "Bordereau"]
    handled = set()
    for b in bordereaux:
        bid = b.get("Id")
        result = SignatureResult(bordereau_id=bid, idbord=b.find("BlocBordereau/IdBord").get("V") if b.find("BlocBordereau/IdBord") is not None else None)
        report.results.append(result)
        sigs = b.findall(_ds("Signature"))
        if not sigs:
            _finding(result, "SIG-ABSENTE", "Ce bordereau n'est pas signé.", fix="Faites signer le bordereau.", kind=INTEGRITY, strict=strict)
            continue
        if bid is None or len(ctx.ids.get(bid, [])) != 1:
            _finding(result, "SIG-ID", "Le bordereau n'a pas d'Id unique : sa signature ne peut pas le désigner sûrement.", kind=INTEGRITY, strict=strict)
            continue
        if len(sigs) > 1:
            _finding(
                result,
                "SIG-MULTIPLE",
                f"Le bordereau porte {len(sigs)} signatures : un bordereau ne peut être signé que par un seul représentant.",
                kind=QUALIF,
                strict=strict,
            )
        sub = []
        for sig in sigs:
            handled.add(sig)
            r = SignatureResult(bordereau_id=bid, idbord=result.idbord)
            verify_signature_element(sig, ctx, r, expected_target=b)
            sub.append(r)
        first = sub[0]
        result.intact = all(r.intact for r in sub)
        result.signer, result.role, result.signing_time, result.policy = first.signer, first.role, first.signing_time, first.policy
        result.certificate_not_after = first.certificate_not_after
        for r in sub:
            result.findings.extend(r.findings)
    for sig in root.iter(_ds("Signature")):
        if sig not in handled:
            report.findings.append(
                Finding(
                    "SIG-HORS-BORDEREAU",
                    "Une signature placée hors d'un bordereau n'a pas été vérifiée (signature au niveau du flux non prise en charge).",
                    severity="warning",
                    layer="signature",
                )
            )
    if not bordereaux:
        report.findings.append(Finding("SIG-DOC-VIDE", "Le PES ne contient aucun bordereau.", layer="signature"))
    return report
