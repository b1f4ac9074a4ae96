"""Demo PKI: a local CA and one signing certificate per official, plus SSH keys for SFTP.

Only for demonstration and tests: real officials sign with an RGS certificate on a token.
Secrets are written 0600, never printed nor logged; running twice reuses what is still valid.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flows.signature.certs import DOCUMENT_SIGNING, CertificateRefused, load_signer

CA_NAME = "AC démo demat (NE PAS UTILISER EN PRODUCTION)"
ORG = "demat démonstration"
CA_YEARS = 10
SIGNER_YEARS = 3
RENEW_BEFORE_DAYS = 30
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

_USAGES = {
    "digital_signature": False,
    "content_commitment": False,
    "key_encipherment": False,
    "data_encipherment": False,
    "key_agreement": False,
    "key_cert_sign": False,
    "crl_sign": False,
    "encipher_only": False,
    "decipher_only": False,
}


def write_private(path: str | Path, data: bytes) -> Path:
    """Write atomically with mode 0600 from the start (no window where the secret is readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_certificate(
    common_name: str,
    *,
    issuer: tuple[object, x509.Certificate] | None = None,
    key: object | None = None,
    role: str | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 365 * SIGNER_YEARS,
    usages: Iterable[str] = ("digital_signature", "content_commitment"),
    extended_usages: Iterable[x509.ObjectIdentifier] | None = (
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        DOCUMENT_SIGNING,
    ),
    is_ca: bool = False,
    key_size: int = 2048,
) -> tuple[object, x509.Certificate]:
    """One certificate. issuer=(ca_key, ca_cert) or None for self-signed. Returns (key, cert).

    Tests use it for expired (not_after in the past), not-yet-valid, non-signing (usages=()
    or ("key_encipherment",)) and untrusted-CA certificates.
    """
    key = key or new_rsa_key(key_size)
    now = datetime.now(UTC).replace(microsecond=0)
    not_before = not_before or (now - timedelta(days=1))  # tolerate clock skew and long test sessions
    not_after = not_after or (not_before + timedelta(days=days))
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)]
    if role:
        attrs.append(x509.NameAttribute(NameOID.TITLE, role))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = x509.Name(attrs)
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    flags = dict(_USAGES)
    if is_ca:
        flags.update(key_cert_sign=True, crl_sign=True, digital_signature=True)
    for u in usages if not is_ca else ():
        if u not in flags:
            raise ValueError(f"usage de clé inconnu : {u}")
        flags[u] = True
    if any(flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if not is_ca and extended_usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_usages)), critical=False)
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return key, cert


def write_pkcs12(path: str | Path, key, cert: x509.Certificate, chain: list[x509.Certificate], password: bytes) -> Path:
    data = pkcs12.serialize_key_and_certificates(
        name=cert.subject.rfc4514_string().encode("utf-8")[:64],
        key=key,
        cert=cert,
        cas=chain or None,
        encryption_algorithm=serialization.BestAvailableEncryption(password),
    )
    return write_private(path, data)


def _new_password() -> bytes:
    return secrets.token_urlsafe(24).encode("ascii")


def _still_valid(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=RENEW_BEFORE_DAYS)


def _load_ca(directory: Path) -> tuple[object, x509.Certificate] | None:
    cert_path, key_path, pass_path = directory / "ca.pem", directory / "ca-key.pem", directory / "ca.pass"
    if not (cert_path.exists() and key_path.exists() and pass_path.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), pass_path.read_bytes().strip())
    except (ValueError, TypeError):
        return None
    if not _still_valid(cert) or cert.public_key().public_numbers() != key.public_key().public_numbers():
        return None
    return key, cert


def _official_ok(directory: Path, oid: str, name: str, role: str, ca_cert: x509.Certificate) -> bool:
    p12, pw = directory / f"{oid}.p12", directory / f"{oid}.pass"
    if not (p12.exists() and pw.exists()):
        return False
    try:
        signer = load_signer(p12, pw.read_bytes().strip())
    except CertificateRefused:
        return False
    cert = signer.cert
    titles = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.TITLE)]
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return cns == [name] and titles == [role] and cert.issuer == ca_cert.subject and _still_valid(cert)


def create_demo_pki(directory: str | Path, officials: list[tuple[str, str, str]], *, ca_key_size: int = 3072) -> dict:
    """Create or reuse the demo CA and one `<id>.p12` (+ `<id>.pass`, 0600) per official.

    Returns {"directory", "ca" (ca.pem path), "officials": {id: {"p12", "password_file", "name",
    "role", "not_after"}}, "created": [...], "reused": [...]} — paths only, never secrets.
    """
    for oid, _name, _role in officials:
        if not _ID_RE.match(oid):
            raise ValueError(f"Identifiant d'élu invalide pour un nom de fichier : « {oid} » (lettres, chiffres, - et _).")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    created: list[str] = []
    reused: list[str] = []
    ca = _load_ca(directory)
    if ca is None:
        ca_pass = _new_password()
        ca = make_certificate(CA_NAME, is_ca=True, days=365 * CA_YEARS, key_size=ca_key_size)
        write_private(directory / "ca.pass", ca_pass + b"\n")
        write_private(
            directory / "ca-key.pem",
            ca[0].private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(ca_pass),
            ),
        )
        (directory / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
        created.append("ca")
    else:
        reused.append("ca")
    ca_key, ca_cert = ca
    out: dict = {"directory": str(directory), "ca": str(directory / "ca.pem"), "officials": {}}
    for oid, name, role in officials:
        p12, pw = directory / f"{oid}.p12", directory / f"{oid}.pass"
        if "ca" in created or not _official_ok(directory, oid, name, role, ca_cert):
            password = _new_password()
            key, cert = make_certificate(name, issuer=(ca_key, ca_cert), role=role, days=365 * SIGNER_YEARS)
            write_private(pw, password + b"\n")
            write_pkcs12(p12, key, cert, [ca_cert], password)
            created.append(oid)
        else:
            cert = load_signer(p12, pw.read_bytes().strip()).cert
            reused.append(oid)
        out["officials"][oid] = {
            "p12": str(p12),
            "password_file": str(pw),
            "name": name,
            "role": role,
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
    out["created"] = created
    out["reused"] = reused
    return out


def create_ssh_keypair(path: str | Path, *, comment: str = "demat") -> tuple[Path, Path]:
    """An ed25519 OpenSSH key (0600) and `<path>.pub`; an existing key is kept as is."""
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    if path.exists():
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        if not pub.exists():
            pub.write_bytes(_ssh_public_line(key, comment))
        return path, pub
    key = ed25519.Ed25519PrivateKey.generate()
    write_private(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()),
    )
    pub.write_bytes(_ssh_public_line(key, comment))
    return path, pub


def _ssh_public_line(key, comment: str) -> bytes:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + b" " + comment.encode("ascii", "replace") + b"\n"
