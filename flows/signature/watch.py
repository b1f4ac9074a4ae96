"""Watch the certificates demat depends on, and say in French which expire soon.

Signing certificates (one PKCS#12 per official, password from the environment or `<id>.pass`),
the CA certificates shipped with them and in the PKI folder, and the SFTP client identity. A plain
ed25519 SSH key has no expiry date and is skipped; an OpenSSH certificate beside it
(`<key>-cert.pub`) does expire and is watched. Passwords and keys are never logged nor put in a
message: only names, subjects and dates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

from flows.signature.certs import CertificateRefused, common_name, is_ca, load_signer, read_password

log = logging.getLogger(__name__)

DEFAULT_WITHIN_DAYS = 30


@dataclass(frozen=True)
class ExpiryAlert:
    """One certificate that needs an operator's attention."""

    source: str  # file name (never a secret)
    subject: str  # who the certificate belongs to
    usage: str  # "signature", "autorité de certification", "client SFTP"
    not_after: datetime | None  # None when unreadable
    days_left: int | None
    level: str  # "expire" (already expired), "bientot" (within the window), "illisible"
    message: str  # French, for the operator

    @property
    def expired(self) -> bool:
        return self.level == "expire"


def _fr(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%d/%m/%Y")


def _alert(source: str, subject: str, usage: str, not_after: datetime, at: datetime, within_days: int,
           renew_hint: str) -> ExpiryAlert | None:
    days = (not_after - at).days
    if not_after <= at:
        return ExpiryAlert(source, subject, usage, not_after, days, "expire",
                           f"Le certificat {usage} de « {subject} » ({source}) a expiré le {_fr(not_after)} : "
                           f"{renew_hint}")
    if days <= within_days:
        return ExpiryAlert(source, subject, usage, not_after, days, "bientot",
                           f"Le certificat {usage} de « {subject} » ({source}) expire le {_fr(not_after)}, "
                           f"dans {days} jour(s) : {renew_hint}")
    return None


SIGN_HINT = "faites-le renouveler auprès de l'autorité de certification avant cette date, sinon la signature sera refusée."
CA_HINT = "les certificats qu'elle a émis ne seront plus acceptés ; installez la nouvelle autorité."
SSH_HINT = "demandez un nouveau certificat SSH, sinon les dépôts SFTP seront refusés."


def _p12_alerts(p12: Path, password_dir: Path, at: datetime, within_days: int) -> list[ExpiryAlert]:
    ident = p12.stem
    try:
        signer = load_signer(p12, read_password(ident, password_dir))
    except CertificateRefused as exc:
        return [ExpiryAlert(p12.name, ident, "de signature", None, None, "illisible",
                            f"Le certificat de signature {p12.name} n'a pas pu être vérifié : {exc}")]
    out = []
    alert = _alert(p12.name, signer.name, "de signature", signer.cert.not_valid_after_utc, at, within_days, SIGN_HINT)
    if alert:
        out.append(alert)
    for ca in signer.chain:
        alert = _alert(p12.name, common_name(ca), "d'autorité de certification", ca.not_valid_after_utc, at,
                       within_days, CA_HINT)
        if alert:
            out.append(alert)
    return out


def _pem_alerts(pem: Path, at: datetime, within_days: int) -> list[ExpiryAlert]:
    try:
        certs = x509.load_pem_x509_certificates(pem.read_bytes())
    except (OSError, ValueError):
        return []  # not a certificate file (a private key, a config): nothing to watch
    out = []
    for cert in certs:
        usage = "d'autorité de certification" if is_ca(cert) else "client"
        alert = _alert(pem.name, common_name(cert), usage, cert.not_valid_after_utc, at, within_days,
                       CA_HINT if is_ca(cert) else SSH_HINT)
        if alert:
            out.append(alert)
    return out


def _ssh_alerts(key_path: Path, at: datetime, within_days: int) -> list[ExpiryAlert]:
    """A plain SSH key never expires (skipped); an OpenSSH certificate `<key>-cert.pub` does."""
    cert_path = key_path.with_name(key_path.name + "-cert.pub")
    if not cert_path.exists():
        return []
    try:
        ident = load_ssh_public_identity(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        return [ExpiryAlert(cert_path.name, key_path.name, "client SFTP", None, None, "illisible",
                            f"Le certificat SSH {cert_path.name} est illisible ({exc.__class__.__name__}).")]
    if not isinstance(ident, SSHCertificate):
        return []
    if ident.valid_before >= 2**63 - 1:  # "forever"
        return []
    not_after = datetime.fromtimestamp(ident.valid_before, UTC)
    subject = ident.key_id.decode("utf-8", "replace") or key_path.name
    alert = _alert(cert_path.name, subject, "client SFTP", not_after, at, within_days, SSH_HINT)
    return [alert] if alert else []


def certificates_expiring(source, within_days: int = DEFAULT_WITHIN_DAYS, *, ssh_keys: Iterable[str | Path] = (),
                          at: datetime | None = None, pki_dir: str | Path | None = None) -> list[ExpiryAlert]:
    """Every certificate expired or expiring within `within_days`, soonest first.

    `source` is a PKI folder (every `*.p12` and `*.pem` in it), a `flows.settings.Settings`
    (its `pki_dir`, and the officials of its configuration must each have a `.p12`), or a
    `PlatformConfig` (with `pki_dir`). `ssh_keys`: SFTP client private keys (paths only).
    """
    at = at or datetime.now(UTC)
    officials: list[str] = []
    config = None
    if hasattr(source, "pki_dir") and hasattr(source, "config"):  # Settings
        pki_dir = Path(source.pki_dir)
        config = source.config
    elif hasattr(source, "collectivites"):  # PlatformConfig
        config = source
        if pki_dir is None:
            from flows.settings import Settings

            pki_dir = Settings.from_env().pki_dir
        pki_dir = Path(pki_dir)
    else:
        pki_dir = Path(source)
    if config is not None:
        officials = sorted({o.certificate for c in config.collectivites for o in c.officials if o.certificate})
    alerts: list[ExpiryAlert] = []
    seen_ca: set[tuple[str, datetime]] = set()
    if pki_dir.is_dir():
        for p12 in sorted(pki_dir.glob("*.p12")):
            for a in _p12_alerts(p12, pki_dir, at, within_days):
                key = (a.subject, a.not_after)
                if a.usage.startswith("d'autorité"):
                    if key in seen_ca:
                        continue
                    seen_ca.add(key)
                alerts.append(a)
        for pem in sorted(pki_dir.glob("*.pem")):
            for a in _pem_alerts(pem, at, within_days):
                if (a.subject, a.not_after) not in seen_ca:
                    seen_ca.add((a.subject, a.not_after))
                    alerts.append(a)
    for ident in officials:
        if not (pki_dir / f"{ident}.p12").exists():
            alerts.append(ExpiryAlert(f"{ident}.p12", ident, "de signature", None, None, "illisible",
                                      f"Aucun certificat de signature « {ident}.p12 » dans {pki_dir} : "
                                      "les documents de ce signataire ne pourront pas être signés."))
    for key in ssh_keys:
        alerts.extend(_ssh_alerts(Path(key), at, within_days))
    alerts.sort(key=lambda a: (a.not_after is not None, a.not_after or at))
    for a in alerts:
        log.warning("%s", a.message)
    return alerts


def token_certificates_expiring(sources: Iterable, within_days: int = DEFAULT_WITHIN_DAYS, *,
                                at: datetime | None = None) -> list[ExpiryAlert]:
    """Expiry alerts for certificates that live on tokens: the officials' (as their agent presented
    them, DER bytes or x509 objects, stored by the platform) and the seal's (read from the HSM
    through a token.TokenConfig, no PIN needed). An unreachable HSM is itself an alert."""
    from flows.signature.token import TokenConfig, TokenError, read_certificate

    at = at or datetime.now(UTC)
    alerts: list[ExpiryAlert] = []
    for src in sources:
        where = "support de signature"
        if isinstance(src, TokenConfig):
            where = f"support {src.label}"
            try:
                src = read_certificate(src)
            except TokenError as exc:
                alerts.append(ExpiryAlert(where, src.label, "de cachet serveur", None, None, "illisible",
                                          f"Le certificat du {where} n'a pas pu être lu : {exc}"))
                continue
        try:
            cert = src if isinstance(src, x509.Certificate) else x509.load_der_x509_certificate(bytes(src))
        except ValueError:
            alerts.append(ExpiryAlert(where, "?", "de signature", None, None, "illisible",
                                      f"Un certificat présenté par un {where} est illisible."))
            continue
        usage = "de cachet serveur" if "cachet" in common_name(cert).casefold() else "de signature"
        alert = _alert(where, common_name(cert), usage, cert.not_valid_after_utc, at, within_days, SIGN_HINT)
        if alert:
            alerts.append(alert)
    alerts.sort(key=lambda a: (a.not_after is not None, a.not_after or at))
    return alerts
