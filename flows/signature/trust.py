"""Is this certificate allowed to sign this step? Chain, validity, key usage, CRL, expected official.

Used before preparing a two-phase signature (the agent presents the token's certificate) and
again on assembly, so a certificate revoked meanwhile is refused. Every refusal is a
CertificateRefused whose French message names the certificate, the rule and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from flows.signature.certs import (
    CertificateRefused,
    build_chain,
    check_signing_certificate,
    common_name,
    load_trust_store,
)

_MAX_CRL_BYTES = 20 * 1024 * 1024


def _fr(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%d/%m/%Y à %H:%M UTC")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: how the platform designates an official's certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class TrustConfig:
    """Trust anchors (CA certificates, files, folders or RGS zips) and CRL files (PEM or DER).

    `crl_required`: refuse a certificate whose issuer has no usable CRL (production setting).
    """

    anchors: list = field(default_factory=list)
    intermediates: list = field(default_factory=list)
    crls: list = field(default_factory=list)
    crl_required: bool = False
    _anchors: list[x509.Certificate] | None = field(default=None, repr=False)
    _crls: list[tuple[str, x509.CertificateRevocationList]] | None = field(default=None, repr=False)

    def anchor_certs(self) -> list[x509.Certificate]:
        if self._anchors is None:
            self._anchors = load_trust_store(list(self.anchors)) if self.anchors else []
        return self._anchors

    def intermediate_certs(self) -> list[x509.Certificate]:
        return load_trust_store(list(self.intermediates)) if self.intermediates else []

    def crl_list(self) -> list[tuple[str, x509.CertificateRevocationList]]:
        if self._crls is None:
            self._crls = [load_crl(src) for src in self.crls]
        return self._crls

    def reload(self) -> None:
        """Forget cached anchors and CRLs (after the nightly CRL refresh)."""
        self._anchors = None
        self._crls = None


@dataclass(frozen=True)
class ExpectedSigner:
    """Who must sign this step: the official's registered certificate and/or their name."""

    name: str | None = None
    cert_sha256: str | None = None


def load_crl(source) -> tuple[str, x509.CertificateRevocationList]:
    """(name, CRL) from a path or bytes, PEM or DER; an unreadable CRL is a CertificateRefused."""
    if isinstance(source, x509.CertificateRevocationList):
        return "CRL", source
    if isinstance(source, bytes):
        name, data = "CRL", source
    else:
        path = Path(source)
        name = path.name
        try:
            if path.stat().st_size > _MAX_CRL_BYTES:
                raise CertificateRefused(f"La liste de révocation {name} dépasse {_MAX_CRL_BYTES // 1_000_000} Mo : refusée.")
            data = path.read_bytes()
        except OSError as exc:
            raise CertificateRefused(
                f"Liste de révocation (CRL) {name} illisible ({exc.strerror}) : vérifiez le chemin configuré."
            ) from None
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return name, x509.load_pem_x509_crl(data)
        return name, x509.load_der_x509_crl(data)
    except ValueError:
        raise CertificateRefused(f"La liste de révocation {name} n'est pas une CRL X.509 lisible (PEM ou DER).") from None


def revocation_problem(
    cert: x509.Certificate, issuer: x509.Certificate | None, crls: Iterable[tuple[str, x509.CertificateRevocationList]],
    at: datetime, *, required: bool = False,
) -> str | None:
    """Why cert is revoked (or its status unknown) at `at` according to its issuer's CRLs, else None."""
    who = common_name(cert)
    usable = 0
    for name, crl in crls:
        if crl.issuer != cert.issuer:
            continue
        if issuer is None or not crl.is_signature_valid(issuer.public_key()):
            return (
                f"la liste de révocation {name} n'est pas signée par l'autorité « {common_name(issuer) if issuer else cert.issuer.rfc4514_string()} » "
                "qui a émis le certificat : elle est ignorée et le statut de révocation est inconnu"
            )
        next_update = crl.next_update_utc
        if next_update is not None and next_update < at:
            if required:
                return (f"la liste de révocation {name} est périmée depuis le {_fr(next_update)} : "
                        "le statut du certificat ne peut pas être établi. Rafraîchissez la CRL")
            continue
        usable += 1
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None and revoked.revocation_date_utc <= at:
            reason = ""
            try:
                reason = f" (motif : {revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.name})"
            except x509.ExtensionNotFound:
                pass
            return f"le certificat de « {who} » a été révoqué le {_fr(revoked.revocation_date_utc)}{reason} selon {name}"
    if required and not usable:
        return f"aucune liste de révocation à jour n'est configurée pour l'autorité qui a émis le certificat de « {who} »"
    return None


def check_signer(
    cert: x509.Certificate,
    trust: TrustConfig | None = None,
    *,
    at: datetime | None = None,
    expected: ExpectedSigner | None = None,
    intermediates: Iterable[x509.Certificate] = (),
) -> list[x509.Certificate]:
    """Raise CertificateRefused (French) unless cert may sign for this step at `at`; returns its chain.

    Checked: validity now and at `at` (a back-dated signing time cannot revive an expired
    certificate), signing key usage, the expected official, and with `trust` the chain to an
    anchor and the CRL of each certificate in it.
    """
    when = (at or datetime.now(UTC)).astimezone(UTC)
    who = common_name(cert)
    check_signing_certificate(cert)
    check_signing_certificate(cert, at=when)
    if expected is not None:
        if expected.cert_sha256 and fingerprint(cert) != expected.cert_sha256.lower().replace(":", ""):
            raise CertificateRefused(
                f"Le certificat présenté (« {who} ») n'est pas celui enregistré pour le signataire de cette étape"
                f"{' (' + expected.name + ')' if expected.name else ''} : signature refusée. "
                "Branchez le support de l'élu désigné dans le circuit, ou faites enregistrer son nouveau certificat."
            )
        if expected.name and not expected.cert_sha256 and who.casefold() != expected.name.casefold():
            raise CertificateRefused(
                f"Le certificat présenté est celui de « {who} », pas celui de « {expected.name} », signataire de cette étape : "
                "signature refusée. Seul l'élu désigné dans le circuit peut signer."
            )
    if trust is None:
        return [cert]
    anchors = trust.anchor_certs()
    if not anchors:
        raise CertificateRefused(
            "Aucune autorité de confiance n'est configurée : le certificat du signataire ne peut pas être vérifié. "
            "Configurez les AC reconnues (ancres de confiance)."
        )
    chain, problems = build_chain(cert, anchors, intermediates=[*trust.intermediate_certs(), *intermediates], at=when)
    if problems:
        raise CertificateRefused(
            f"Le certificat de « {who} » n'est pas reconnu : {'; '.join(problems)}. "
            "Il doit être délivré par une autorité de certification configurée comme ancre de confiance."
        )
    crls = trust.crl_list()
    if crls or trust.crl_required:
        for i, c in enumerate(chain[:-1]):
            problem = revocation_problem(c, chain[i + 1], crls, when, required=trust.crl_required and i == 0)
            if problem:
                raise CertificateRefused(f"Signature refusée : {problem}. Le titulaire doit obtenir un nouveau certificat.")
    return chain


def refresh_crl(url: str, destination: str | Path, *, timeout: float = 30.0) -> Path:
    """Download a CRL (the nightly refresh) and replace `destination` atomically once it parses.

    Only http(s); the size is capped; a download that is not a CRL leaves the previous file in
    place and raises CertificateRefused (French), so a broken distribution point never erases
    the last good list.
    """
    import os
    import tempfile
    import urllib.error
    import urllib.parse
    import urllib.request

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CertificateRefused(f"Adresse de CRL refusée (http ou https attendu) : {url}")
    destination = Path(destination)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  # nosec B310 - scheme checked
            data = resp.read(_MAX_CRL_BYTES + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CertificateRefused(
            f"Téléchargement de la CRL {url} impossible ({getattr(exc, 'reason', exc)}) : la liste précédente est conservée."
        ) from None
    if len(data) > _MAX_CRL_BYTES:
        raise CertificateRefused(f"La CRL téléchargée depuis {url} dépasse {_MAX_CRL_BYTES // 1_000_000} Mo : ignorée.")
    load_crl(data)  # raises when it is not a CRL
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return destination
