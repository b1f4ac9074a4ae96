"""Signing certificates: load a PKCS#12, check it may sign, build its chain to a trust store.

The DGFiP checks the certificate at signing time (validity, signing usage, accepted CA); we refuse
early, with a French message an agent understands, rather than let Hélios reject days later.
Passwords and keys are never logged nor put in an exception message.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

log = logging.getLogger(__name__)

# Extended key usages compatible with a document signature (when the extension is present).
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # RFC 9336 id-kp-documentSigning
SIGNING_EKUS = {
    DOCUMENT_SIGNING,
    ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    ObjectIdentifier("1.3.6.1.4.1.311.10.3.12"),  # Microsoft document signing
    ObjectIdentifier("1.2.840.113583.1.1.5"),  # Adobe authentic documents trust
}

_ZIP_MAX_MEMBERS = 5000
_ZIP_MAX_MEMBER_BYTES = 1024 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class CertificateRefused(ValueError):
    """The certificate may not sign (expired, not yet valid, no signing usage, unreadable)."""


@dataclass
class Signer:
    """What sign_pes needs: the private key, its certificate and the rest of the chain."""

    key: object = field(repr=False)
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def name(self) -> str:
        return common_name(self.cert)

    def __repr__(self) -> str:  # never show the key
        return f"Signer(name={self.name!r}, serial={self.cert.serial_number})"


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def _fr_date(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%d/%m/%Y à %H:%M UTC")


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


def title(cert: x509.Certificate) -> str | None:
    for oid in (NameOID.TITLE, NameOID.ORGANIZATIONAL_UNIT_NAME):
        attrs = cert.subject.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def days_until_expiry(cert: x509.Certificate, at: datetime | None = None) -> int:
    """Whole days left before notAfter (negative once expired): feeds the expiry alerts."""
    return (cert.not_valid_after_utc - _utc(at)).days


def signing_usage_problem(cert: x509.Certificate) -> str | None:
    """Why this certificate has no signing usage, or None when it has one."""
    if is_ca(cert):
        return "c'est un certificat d'autorité de certification (CA), pas un certificat de signature de personne"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "il ne déclare aucun usage de clé (extension keyUsage absente)"
    if not (ku.digital_signature or ku.content_commitment):
        return "son usage de clé n'autorise pas la signature (ni digitalSignature ni nonRepudiation)"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not SIGNING_EKUS.intersection(eku):
        names = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku)
        return f"son usage étendu ({names}) ne permet pas de signer des documents"
    return None


def check_signing_certificate(cert: x509.Certificate, at: datetime | None = None) -> None:
    """Raise CertificateRefused (French) unless cert may sign at `at` (default: now)."""
    when = _utc(at)
    who = common_name(cert)
    if when < cert.not_valid_before_utc:
        raise CertificateRefused(
            f"Le certificat de « {who} » n'est pas encore valide : il ne le sera qu'à partir du "
            f"{_fr_date(cert.not_valid_before_utc)} (date de signature : {_fr_date(when)}). "
            "Vérifiez l'horloge du serveur ou attendez le début de validité."
        )
    if when > cert.not_valid_after_utc:
        raise CertificateRefused(
            f"Le certificat de « {who} » a expiré le {_fr_date(cert.not_valid_after_utc)} : "
            "la signature est refusée. Faites renouveler le certificat auprès de l'autorité de certification."
        )
    problem = signing_usage_problem(cert)
    if problem:
        raise CertificateRefused(
            f"Le certificat de « {who} » ne peut pas servir à signer : {problem}. "
            "Utilisez un certificat de signature (usage digitalSignature / nonRepudiation)."
        )


def load_signer(p12_path: str | Path, password: bytes | str | None) -> Signer:
    """Open a PKCS#12; a wrong password or a broken file gives a French CertificateRefused."""
    path = Path(p12_path)
    if isinstance(password, str):
        password = password.encode("utf-8")
    try:
        data = path.read_bytes()
    except OSError as exc:
        from flows.helios.xsdtext import error_fr

        raise CertificateRefused(f"Le fichier de certificat {path.name} est illisible : {error_fr(exc)}.") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password or None)
    except (ValueError, TypeError):
        # never chain the original exception: it could quote material from the file
        raise CertificateRefused(
            f"Impossible d'ouvrir le certificat {path.name} : mot de passe incorrect ou fichier PKCS#12 invalide."
        ) from None
    if key is None or cert is None:
        raise CertificateRefused(f"Le fichier {path.name} ne contient pas de clé privée et de certificat de signature.")
    return Signer(key=key, cert=cert, chain=list(extra or []))


def password_env_name(official_id: str) -> str:
    return "DEMAT_P12_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", official_id.upper())


def read_password(official_id: str, directory: str | Path | None = None) -> bytes:
    """The PKCS#12 password: env DEMAT_P12_PASSWORD_<ID> first, else `<directory>/<id>.pass`."""
    env = os.environ.get(password_env_name(official_id))
    if env:
        return env.encode("utf-8")
    if directory is None:
        raise CertificateRefused(
            f"Aucun mot de passe pour le certificat de « {official_id} » : définissez "
            f"{password_env_name(official_id)} ou fournissez le fichier {official_id}.pass."
        )
    if not _ID_RE.match(official_id):
        raise CertificateRefused(f"Identifiant de signataire invalide : « {official_id} ».")
    path = Path(directory) / f"{official_id}.pass"
    try:
        mode = path.stat().st_mode
        secret = path.read_bytes().strip()
    except OSError:
        raise CertificateRefused(
            f"Mot de passe introuvable pour « {official_id} » : ni {password_env_name(official_id)} ni {path.name}."
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("Le fichier %s est lisible par d'autres utilisateurs : restreignez-le (chmod 600).", path.name)
    return secret


# --- trust store --------------------------------------------------------------------------


def _certs_from_bytes(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return list(x509.load_pem_x509_certificates(data))
        except ValueError:
            return []
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return []


def _certs_from_zip(data: bytes) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()[:_ZIP_MAX_MEMBERS]
        for info in infos:
            if info.is_dir() or info.file_size > _ZIP_MAX_MEMBER_BYTES:
                continue
            member = zf.read(info)
            if member[:4] == b"PK\x03\x04":  # certs.zip / certsInter.zip nested inside an archive
                out.extend(_certs_from_zip(member))
            else:
                out.extend(_certs_from_bytes(member))
    return out


def load_trust_store(sources: Iterable) -> list[x509.Certificate]:
    """Certificates from PEM/DER files, directories, zip archives (e.g. CA_RGS3.zip) or objects.

    Unreadable members are skipped (the RGS archive mixes formats); duplicates are removed.
    """
    certs: list[x509.Certificate] = []
    if isinstance(sources, (str, Path, bytes, x509.Certificate)):
        sources = [sources]
    for src in sources:
        if isinstance(src, x509.Certificate):
            certs.append(src)
            continue
        if isinstance(src, bytes):
            certs.extend(_certs_from_zip(src) if src[:4] == b"PK\x03\x04" else _certs_from_bytes(src))
            continue
        path = Path(src)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in {".pem", ".cer", ".crt", ".der", ".zip"}:
                    certs.extend(load_trust_store([child]))
            continue
        data = path.read_bytes()
        certs.extend(_certs_from_zip(data) if data[:4] == b"PK\x03\x04" else _certs_from_bytes(data))
    seen: set[bytes] = set()
    unique = []
    for c in certs:
        fp = c.fingerprint(hashes.SHA256())
        if fp not in seen:
            seen.add(fp)
            unique.append(c)
    return unique


WEAK_HASHES = ("sha1", "md5")


def _verify_weak(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Check a certificate signed with SHA-1 by hand: cryptography's verify_directly_issued_by
    refuses SHA-1 outright, while the DGFiP's own CA chain (and `openssl verify`) still uses it."""
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        algo = cert.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - unknown algorithm: not verifiable here
        return False
    if algo is None or algo.name not in ("sha1",):
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        else:
            return False
    except Exception:  # noqa: BLE001 - bad signature: not this issuer
        return False
    return True


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - any failure means "not this issuer"
        return _verify_weak(cert, issuer)
    return True


def weak_hash(cert: x509.Certificate) -> str | None:
    """"SHA-1" when the certificate's own signature uses a hash known to be weak, else None."""
    try:
        algo = cert.signature_hash_algorithm
    except Exception:  # noqa: BLE001
        return None
    return algo.name.upper().replace("SHA1", "SHA-1") if algo is not None and algo.name in WEAK_HASHES else None


def build_chain(
    cert: x509.Certificate,
    trust_store: list[x509.Certificate],
    *,
    intermediates: list[x509.Certificate] = (),
    at: datetime | None = None,
    notes: list[str] | None = None,
) -> tuple[list[x509.Certificate], list[str]]:
    """Chain from cert up to a trust-store certificate; returns (chain, problems in French).

    As in the DGFiP readme, the chain is accepted when one of its certificates is in the store
    (the store lists the CAs allowed to issue PES signing certificates). A link signed with
    SHA-1 is accepted, as `openssl verify` accepts it; `notes` (when given) receives a French
    warning for each such link.
    """
    when = _utc(at)
    anchors = {c.fingerprint(hashes.SHA256()): c for c in trust_store}
    pool = list(trust_store) + [c for c in intermediates if c.fingerprint(hashes.SHA256()) not in anchors]
    chain = [cert]
    problems: list[str] = []
    current = cert
    for _ in range(10):
        if current.fingerprint(hashes.SHA256()) in anchors:
            return chain, problems
        issuers = [c for c in pool if c is not current and _issued_by(current, c)]
        if not issuers:
            problems.append(
                f"le certificat « {common_name(current)} » est émis par « {current.issuer.rfc4514_string()} », "
                "autorité absente du magasin de confiance"
            )
            return chain, problems
        issuer = issuers[0]
        weak = weak_hash(current)
        if weak and notes is not None:
            notes.append(
                f"le certificat « {common_name(current)} » est signé par « {common_name(issuer)} » avec {weak},"
                " algorithme d'empreinte jugé faible (accepté car l'autorité l'utilise encore)"
            )
        if not is_ca(issuer) and issuer.subject != issuer.issuer:
            problems.append(f"« {common_name(issuer)} » n'est pas une autorité de certification")
        if not (issuer.not_valid_before_utc <= when <= issuer.not_valid_after_utc):
            problems.append(
                f"l'autorité « {common_name(issuer)} » n'était pas valide à la date vérifiée "
                f"(du {_fr_date(issuer.not_valid_before_utc)} au {_fr_date(issuer.not_valid_after_utc)})"
            )
        chain.append(issuer)
        if issuer.fingerprint(hashes.SHA256()) in anchors:
            return chain, problems
        current = issuer
    problems.append("chaîne de certification trop longue ou circulaire")
    return chain, problems
