"""Server seal ("cachet serveur"): automatic signatures by the collectivité's or operator's key in an HSM.

The same two-phase code as an official's signature (prepare → the HSM signs the digests over
PKCS#11 → assemble and verify), with a certificate distinct from every official's. Each use
returns a SealUse that the caller writes to the dossier's journal.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from cryptography import x509

from flows.signature.certs import CertificateRefused, common_name, title
from flows.signature.remote import (
    RemoteSignatureRefused,
    assemble_pdf,
    assemble_pes,
    prepare_pdf,
    prepare_pes,
)
from flows.signature.token import TokenConfig, TokenError, read_certificate, sign_digests
from flows.signature.trust import TrustConfig, fingerprint

SEAL_ROLE = "Cachet serveur"


@dataclass(frozen=True)
class SealUse:
    """What the journal records about one use of the seal (no secret)."""

    kind: str  # "pes" | "pdf"
    document_sha256: str
    signed_sha256: str
    signatures: int
    certificate_sha256: str
    subject: str
    token_label: str
    at: str

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_fr(self) -> str:
        what = f"{self.signatures} bordereau(x) du PES" if self.kind == "pes" else "le document PDF"
        return f"Cachet serveur « {self.subject} » apposé sur {what} (support {self.token_label}, {self.at})."


def seal_certificate(hsm: TokenConfig) -> x509.Certificate:
    """The seal's certificate read from the HSM; refused if it looks like a person's certificate."""
    cert = x509.load_der_x509_certificate(read_certificate(hsm))
    if (title(cert) or "").casefold() != SEAL_ROLE.casefold() and "cachet" not in common_name(cert).casefold():
        raise CertificateRefused(
            f"Le certificat du support « {hsm.label} » (« {common_name(cert)} ») n'est pas un certificat de cachet serveur : "
            "un cachet ne doit jamais utiliser le certificat d'un élu."
        )
    return cert


def _sign_all(hsm: TokenConfig, pin: str, prepared) -> dict[str, bytes]:
    items = [(k, prepared.digest_algorithm, d) for k, d in prepared.digests().items()]
    outcome = sign_digests(hsm, pin, items)
    if outcome.failed:
        raise TokenError(next(iter(outcome.failed.values())))
    return outcome.signatures


def _use(kind: str, document: bytes, signed: bytes, n: int, cert: x509.Certificate, hsm: TokenConfig) -> SealUse:
    return SealUse(kind, hashlib.sha256(document).hexdigest(), hashlib.sha256(signed).hexdigest(), n,
                   fingerprint(cert), common_name(cert), hsm.label, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def seal_pes(pes: bytes, hsm: TokenConfig, pin: str, *, policy: str = "1.7", place: str | None = None,
             trust: TrustConfig | None = None, signing_time: datetime | None = None) -> tuple[bytes, SealUse]:
    """Seal every bordereau of a PES through the HSM; returns (signed PES, SealUse for the journal)."""
    cert = seal_certificate(hsm)
    prepared = prepare_pes(pes, cert, role=SEAL_ROLE, place=place, policy=policy, signing_time=signing_time, trust=trust)
    values = _sign_all(hsm, pin, prepared)
    signed = assemble_pes(prepared, values)
    return signed, _use("pes", pes, signed, len(values), cert, hsm)


def seal_pdf(pdf: bytes, hsm: TokenConfig, pin: str, *, place: str | None = None, chain: list[x509.Certificate] = (),
             trust: TrustConfig | None = None, name: str = "document.pdf") -> tuple[bytes, SealUse]:
    """PAdES seal of a PDF through the HSM; returns (signed PDF, SealUse for the journal)."""
    cert = seal_certificate(hsm)
    prepared = prepare_pdf(pdf, cert, role=SEAL_ROLE, place=place, chain=list(chain), trust=trust, name=name)
    values = _sign_all(hsm, pin, prepared)
    if "pdf" not in values:
        raise RemoteSignatureRefused("Le HSM n'a pas rendu de signature pour le PDF.")
    signed = assemble_pdf(prepared, values["pdf"])
    return signed, _use("pdf", pdf, signed, 1, cert, hsm)
