"""The official signs on their own token: what waits for them, prepare, apply, reject (docs/signature.md).

demat never holds an official's private key. When a dossier reaches the SIGNATURE step of an
official who signs on a token, the signing agent (`demat-signer`, on the official's workstation)
lists what waits (`pending_for`), sends the token's certificate (`prepare_batch`: the certificate
is checked against the configured trust anchors, CRLs and the step's official, then each dossier's
signature is prepared and the prepared state stored in this module's tables), signs the digests on
the token with one PIN entry and posts the raw values (`apply_batch`: each value verified, the
signed document assembled, verified again, attached once, journaled, and the step's decision
recorded as the official's). Everything between the two requests lives in the database, so a
restart in between changes nothing; posting the same signatures twice applies them once.

Also here: which officials sign on a token, the trust configuration, and the server seal's HSM
(`seal_config`), which `steps.sign` uses for AUTO steps and `cachet_serveur` collectivités.
"""

from __future__ import annotations

import base64
import os
import stat
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from flows.config import Collectivite
from flows.dossier import service
from flows.dossier.db import ensure_tables, lock, session_scope
from flows.dossier.models import Base, Dossier
from flows.dossier.store import ArtefactStore
from flows.settings import Settings

MAX_BATCH = 200  # dossiers per batch: one PIN entry, one request
SEAL_TOKEN_LABEL = "demat-cachet-serveur"  # noqa: S105 - a token label, not a secret; flows.signature.softhsm's label for the seal
SEAL_KEY_LABEL = "cachet-serveur"


class SigningError(Exception):
    """A refusal the agent shows as is: `status` (HTTP), French `erreur` and `correction`."""

    def __init__(self, status: int, erreur: str, correction: str) -> None:
        super().__init__(erreur)
        self.status, self.erreur, self.correction = status, erreur, correction


def _not_found(dossier_id: str) -> SigningError:
    return SigningError(404, f"Dossier « {dossier_id} » introuvable parmi ceux qui attendent votre signature.",
                        "Listez ce qui vous attend (demat-signer list). Un dossier d'un autre élu, déjà signé ou "
                        "rejeté n'y figure pas.")


# --------------------------------------------------------------------------------------------- tables
class SignatureLot(Base):
    """A batch prepared for one user and one certificate (the agent's one PIN entry)."""

    __tablename__ = "signature_lot"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    certificate: Mapped[str] = mapped_column(Text)  # base64 DER (public)
    certificate_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SignaturePreparee(Base):
    """One dossier's prepared signature in a batch: the prepared state (JSON, no secret), the values
    accepted so far (a token removed mid-batch keeps them) and, once assembled, the signed artefact."""

    __tablename__ = "signature_preparee"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lot_id: Mapped[str] = mapped_column(String(40), index=True)
    dossier_id: Mapped[str] = mapped_column(String(80), index=True)
    step: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # pes | pdf | xades
    prepared: Mapped[str] = mapped_column(Text)
    accepted: Mapped[dict] = mapped_column(JSON, default=dict)  # {part: base64 value}
    signed_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (UniqueConstraint("lot_id", "dossier_id", name="uq_signature_preparee"),)


def _tables(session) -> None:
    ensure_tables(session, "signing", [SignatureLot.__table__, SignaturePreparee.__table__])


# --------------------------------------------------------------------------------------------- configuration
def legacy_pkcs12(settings: Settings, official) -> Path | None:
    """The official's PKCS#12 when the configuration still asks for server-side signing (fallback)."""
    if official.signature == "support" or not official.certificate:
        return None
    p12 = settings.pki_dir / f"{official.certificate}.p12"
    if official.signature == "pkcs12" or p12.exists():
        return p12
    return None


def document_signed(coll: Collectivite, dossier: Dossier) -> bool:
    """Whether this dossier's document carries an electronic signature (PES always; actes as configured)."""
    return dossier.flow == "helios" or coll.acte_signature != "aucune"


def signature_step(coll: Collectivite, dossier: Dossier) -> tuple[int, object] | None:
    """(1-based number among the human steps, step) of the circuit's SIGNATURE step, or None."""
    from flows.pipeline.steps import human_steps

    for i, s in enumerate(human_steps(coll, dossier), 1):
        if s.kind == "SIGNATURE":
            return i, s
    return None


def on_token(settings: Settings, coll: Collectivite, dossier: Dossier) -> bool:
    """Whether the dossier's SIGNATURE step is made on the official's token (not approvable in the page)."""
    found = signature_step(coll, dossier)
    if found is None or coll.cachet_serveur or not document_signed(coll, dossier):
        return False
    return legacy_pkcs12(settings, coll.official(found[1].official)) is None


def trust_config(settings: Settings):
    """The TrustConfig of the configuration (`signature:`), paths relative to the state folder."""
    from flows.signature.trust import TrustConfig

    sig = settings.config.signature

    def paths(items):
        return [p if Path(p).is_absolute() else settings.state_dir / p for p in items]

    anchors = paths(sig.ancres)
    if not anchors and (settings.pki_dir / "ca.pem").exists():
        anchors = [settings.pki_dir / "ca.pem"]
    return TrustConfig(anchors=anchors, intermediates=paths(sig.intermediaires),
                       crls=[p for p in paths(sig.crls) if Path(p).exists() or sig.crl_obligatoire],
                       crl_required=sig.crl_obligatoire)


def expected_signer(official):
    from flows.signature.trust import ExpectedSigner

    return ExpectedSigner(official.name, official.cert_sha256)


@dataclass(frozen=True)
class SealConfig:
    token: object  # flows.signature.token.TokenConfig
    pin: str = field(repr=False)


def seal_config(settings: Settings) -> SealConfig | None:
    """The server seal's HSM and PIN, or None when the platform has no seal.

    From the environment (DEMAT_HSM_TOKEN, DEMAT_HSM_KEY, DEMAT_HSM_MODULE, DEMAT_HSM_SOFTHSM_CONF
    or SOFTHSM2_CONF; the PIN in DEMAT_HSM_PIN or a file named by DEMAT_HSM_PIN_FILE), else the
    embedded default's SoftHSM2 seal token in `<state>/softhsm` (PIN file 0600). A PIN file readable
    by others is refused: the seal must not be usable by anyone on the machine.
    """
    from flows.signature.token import TokenConfig

    state = settings.state_dir / "softhsm"
    label = os.environ.get("DEMAT_HSM_TOKEN", "").strip()
    pin = os.environ.get("DEMAT_HSM_PIN", "")
    pin_file = os.environ.get("DEMAT_HSM_PIN_FILE", "").strip()
    conf = os.environ.get("DEMAT_HSM_SOFTHSM_CONF", "").strip() or None
    if not label:
        if not (state / f"{SEAL_KEY_LABEL}.pin").exists():
            return None
        label, pin_file, conf = SEAL_TOKEN_LABEL, str(state / f"{SEAL_KEY_LABEL}.pin"), str(state / "softhsm2.conf")
    if not pin and pin_file:
        path = Path(pin_file)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SigningError(500, f"Le fichier du code PIN du cachet serveur {path} est lisible par d'autres "
                                        "comptes : le cachet n'est pas utilisé.",
                                   f"Restreignez-le à son propriétaire : chmod 600 {path}")
            pin = path.read_text().strip()
        except OSError as exc:
            raise SigningError(500, f"Code PIN du cachet serveur illisible ({path} : {exc.strerror}).",
                               "Vérifiez DEMAT_HSM_PIN_FILE ou le dossier softhsm de l'état de la plateforme.") from None
    if not pin:
        raise SigningError(500, f"Le cachet serveur « {label} » est configuré sans code PIN.",
                           "Donnez-le dans DEMAT_HSM_PIN (secret de déploiement) ou DEMAT_HSM_PIN_FILE (fichier 0600).")
    token = TokenConfig(label=label, module=os.environ.get("DEMAT_HSM_MODULE") or None,
                        key_label=os.environ.get("DEMAT_HSM_KEY") or (SEAL_KEY_LABEL if label == SEAL_TOKEN_LABEL else None),
                        softhsm_conf=conf)
    return SealConfig(token, pin)


# --------------------------------------------------------------------------------------------- what waits
def _officials_of(settings: Settings, user: str) -> dict[str, list]:
    """{collectivité slug: [officials this Airflow user signs for]}."""
    out: dict[str, list] = {}
    for c in settings.config.collectivites:
        mine = [o for o in c.officials if user in o.users]
        if mine:
            out[c.slug] = mine
    return out


def _waiting_step(settings: Settings, coll: Collectivite, dossier: Dossier) -> int | None:
    """The SIGNATURE step's number when the dossier waits for it on the official's token, else None."""
    from flows.pipeline.steps import _parapheur

    if dossier.state != "au_parapheur" or not on_token(settings, coll, dossier):
        return None
    number, _step = signature_step(coll, dossier)
    progress = _parapheur(dossier)
    decisions = progress.get("decisions", {})
    # an approval without the token's signature (Airflow's own HITL form) signs nothing: still waiting
    if token_signed(dossier, number) or number not in progress.get("asked", []):
        return None
    if any(str(i) not in decisions for i in range(1, number)):
        return None
    return number


def _pending_dossier(settings: Settings, session, user: str, dossier_id: str, *, for_update: bool = False):
    """(dossier, collectivité, official, step number) if it waits for this user's signature; else 404."""
    mine = _officials_of(settings, user)
    if not isinstance(dossier_id, str) or not dossier_id or len(dossier_id) > 80 or "\x00" in dossier_id:
        raise _not_found(str(dossier_id)[:80])
    stmt = select(Dossier).where(Dossier.id == dossier_id, Dossier.collectivite.in_(sorted(mine) or [""]))
    if for_update:
        stmt = stmt.with_for_update()
    dossier = session.execute(stmt).scalar_one_or_none()
    if dossier is None:
        raise _not_found(dossier_id)
    coll = settings.config.collectivite(dossier.collectivite)
    number = _waiting_step(settings, coll, dossier)
    if number is None:
        raise _not_found(dossier_id)
    official = coll.official(signature_step(coll, dossier)[1].official)
    if official not in mine[coll.slug]:
        raise _not_found(dossier_id)  # another official's dossier: not even its existence is told
    return dossier, coll, official, number


def _kind(coll: Collectivite, dossier: Dossier) -> str:
    if dossier.flow == "helios":
        return "pes"
    return "pdf" if coll.acte_signature == "pades" else "xades"


def _item(coll: Collectivite, dossier: Dossier, number: int, official) -> dict:
    from flows.pipeline.steps import DOC_TYPE_LABELS, human_steps

    bordereaux = len((dossier.extra or {}).get("bordereaux") or []) if dossier.flow == "helios" else None
    return {
        "id": dossier.id, "collectivite": coll.name, "objet": dossier.objet or dossier.original_name,
        "kind": "pes" if dossier.flow == "helios" else "acte",
        "type": DOC_TYPE_LABELS.get(dossier.doc_type or "", "Flux PES V2" if dossier.flow == "helios" else "Acte"),
        "montant_total": dossier.montant, "bordereaux": bordereaux, "fichier": dossier.original_name,
        "numero": dossier.numero_interne or dossier.nomfic,
        "step": f"{number}/{len(human_steps(coll, dossier))}", "signataire": f"{official.name} ({official.role})",
        "signature": {"pes": "XAdES par bordereau", "pdf": "PAdES dans le PDF",
                      "xades": "XAdES détachée (fichier 99_SE)"}[_kind(coll, dossier)],
        "since": dossier.updated_at.isoformat() if dossier.updated_at else None,
    }


def pending_for(settings: Settings, user: str) -> list[dict]:
    """What waits for this user's signature on their token, oldest first (only their officials' steps)."""
    mine = _officials_of(settings, user)
    if not mine:
        return []
    out = []
    with session_scope(settings.database_url) as session:
        from sqlalchemy.orm import lazyload

        rows = session.execute(select(Dossier).where(Dossier.state == "au_parapheur",
                                                     Dossier.collectivite.in_(sorted(mine)))
                               .options(lazyload(Dossier.journal), lazyload(Dossier.artefacts))  # a list, not histories
                               .order_by(Dossier.updated_at, Dossier.id)).scalars()
        for d in rows:
            coll = settings.config.collectivite(d.collectivite)
            number = _waiting_step(settings, coll, d)
            if number is None:
                continue
            official = coll.official(signature_step(coll, d)[1].official)
            if official in mine[coll.slug]:
                out.append(_item(coll, d, number, official))
    return out


def summary(settings: Settings, user: str, dossier_id: str) -> dict:
    """The readable summary of one dossier waiting for this user's signature (404 otherwise)."""
    with session_scope(settings.database_url) as session:
        dossier, coll, official, number = _pending_dossier(settings, session, user, dossier_id)
        out = _item(coll, dossier, number, official)
        out["siren"] = dossier.siren
        out["historique"] = [{"date": e.at.isoformat(), "message": e.message, "acteur": e.actor}
                             for e in dossier.journal]
        if dossier.flow == "helios":
            out["identifiants_bordereaux"] = list((dossier.extra or {}).get("bordereaux") or [])
        return out


def _document_bytes(settings: Settings, store: ArtefactStore, dossier: Dossier) -> tuple[str, str, bytes]:
    if dossier.flow == "helios":
        return dossier.original_name, "application/xml", store.get(dossier.sha256)
    from flows.pipeline.steps import _acte_document

    name, data = _acte_document(store, dossier, settings)
    return name, "application/pdf", data


def document(settings: Settings, user: str, dossier_id: str) -> tuple[str, str, bytes]:
    """(name, media type, bytes) of the document to be signed: the PES, or the acte's PDF."""
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as session:
        dossier, _coll, _official, _n = _pending_dossier(settings, session, user, dossier_id)
        return _document_bytes(settings, store, dossier)


# --------------------------------------------------------------------------------------------- prepare
def _certificate(certificate_der) -> tuple[object, bytes]:
    from cryptography import x509

    try:
        der = base64.b64decode(certificate_der, validate=True) if isinstance(certificate_der, str) else bytes(certificate_der)
        return x509.load_der_x509_certificate(der), der
    except (ValueError, TypeError):
        raise SigningError(400, "Le certificat présenté n'est pas un certificat X.509 lisible (DER en base64 attendu).",
                           "Vérifiez que le support est bien branché et que demat-signer lit le bon support "
                           "(--token-label).") from None


def prepare_batch(settings: Settings, user: str, ids: list[str] | None, certificate_der) -> dict:
    """Check the certificate, prepare each dossier's signature, store it; the `demat-batch/1` answer.

    `ids` empty or None: everything waiting for this user. A certificate refused for one dossier
    (not the step's official's, expired, revoked, untrusted, no signing usage) refuses the batch
    with the reason (422), and nothing is stored.
    """
    from flows.signature.certs import CertificateRefused, common_name
    from flows.signature.remote import (
        RemoteSignatureRefused,
        make_batch,
        prepare_detached,
        prepare_pdf,
        prepare_pes,
    )
    from flows.signature.trust import check_signer, fingerprint
    from flows.signature.xades import SignatureError

    cert, der = _certificate(certificate_der)
    if ids is None or ids == []:
        ids = [i["id"] for i in pending_for(settings, user)]
        if not ids:
            raise SigningError(404, "Rien n'attend votre signature.", "Aucun lot à préparer.")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise SigningError(400, "« ids » doit être une liste d'identifiants de dossiers.", "Exemple : {\"ids\": [\"…\"]}.")
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_BATCH:
        raise SigningError(413, f"Lot trop grand : {len(ids)} dossiers, au plus {MAX_BATCH}.",
                           f"Signez en plusieurs lots de {MAX_BATCH} dossiers au plus (--ids).")
    trust = trust_config(settings)
    store = ArtefactStore(settings.store_root)
    prepared: dict = {}
    meta: dict[str, tuple[int, str]] = {}
    summaries: dict[str, str] = {}
    policy = settings.config.signature.politique_pes
    with session_scope(settings.database_url) as session:
        _tables(session)
        for dossier_id in ids:
            dossier, coll, official, number = _pending_dossier(settings, session, user, dossier_id)
            expected = expected_signer(official)
            try:
                check_signer(cert, trust, expected=expected)
                kind = _kind(coll, dossier)
                name, _media, data = _document_bytes(settings, store, dossier)
                if kind == "pes":
                    p = prepare_pes(data, cert, role=official.role, place=coll.name, policy=policy)
                elif kind == "pdf":
                    p = prepare_pdf(data, cert, role=official.role, place=coll.name, name=name, trust=trust,
                                    expected=expected)
                else:
                    p = prepare_detached(data, cert, role=official.role, name=name, place=coll.name)
            except CertificateRefused as exc:
                raise SigningError(422, str(exc), "Branchez le support de l'élu désigné dans le circuit, avec un "
                                                  "certificat valide, reconnu et non révoqué.") from None
            except (RemoteSignatureRefused, SignatureError) as exc:
                raise SigningError(422, f"Dossier {dossier_id} : signature impossible à préparer : {exc}",
                                   "Prévenez l'agent de la collectivité : le document doit être corrigé.") from None
            prepared[dossier_id] = p
            meta[dossier_id] = (number, kind)
            summaries[dossier_id] = f"{coll.name} — {dossier.objet or dossier.original_name}"
        lot_id = f"lot-{uuid.uuid4().hex[:16]}"
        session.add(SignatureLot(id=lot_id, user=user, certificate=base64.b64encode(der).decode("ascii"),
                                 certificate_sha256=fingerprint(cert), created_at=service.now()))
        for ref, p in prepared.items():
            number, kind = meta[ref]
            text = p.to_json(include_document=False) if kind == "pes" else p.to_json()
            session.add(SignaturePreparee(lot_id=lot_id, dossier_id=ref, step=number, kind=kind, prepared=text,
                                          accepted={}))
            d = service.get(session, ref)
            service.note(session, d, event="signature_preparee", actor=common_name(cert),
                         message=(f"Signature préparée pour le support de {common_name(cert)} (lot {lot_id}, "
                                  f"{len(p.digests())} empreinte(s)) : en attente des valeurs signées."),
                         details={"lot": lot_id, "certificate_sha256": fingerprint(cert), "step": number})
    return make_batch(prepared, batch_id=lot_id, summaries=summaries)


# --------------------------------------------------------------------------------------------- apply
@dataclass
class BatchOutcome:
    signed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    completed: list[tuple[str, int]] = field(default_factory=list)  # (dossier, step) whose decision is recorded

    def to_dict(self) -> dict:
        return {"signed": sorted(self.signed), "refused": self.refused, "waiting": self.waiting}


def _b64(values: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode("ascii") for k, v in values.items()}


def _unb64(values: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (values or {}).items()}


def _der(value) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        return None


def _verify_signed(kind: str, data: bytes, original: bytes, trust) -> str | None:
    """demat's own verifier on the assembled document; why it fails (French), else None."""
    anchors = list(trust.anchors)
    if kind == "pes":
        from flows.signature.verify import verify_pes

        report = verify_pes(data, trust_store=anchors)
        if not report.ok:
            return "vérification du PES signé en échec : " + "; ".join(f.message for f in report.all_findings()[:3])
    elif kind == "xades":
        from flows.signature.detached import verify_detached

        result = verify_detached(original, data, anchors)
        if not result.intact or result.errors:
            return "vérification de la signature détachée en échec : " + "; ".join(
                f.message for f in result.findings[:3])
    return None  # PAdES: assemble_pdf verified the value against the certificate's key


def apply_batch(settings: Settings, user: str, batch_id: str, posted: dict) -> BatchOutcome:
    """Apply a `demat-signatures/1` answer: verify, assemble, attach once, journal, record the decision.

    Values that verify are kept even when the batch is incomplete (a token removed mid-batch); a
    dossier is assembled only when all its parts are there. A value that does not verify is refused
    with the reason; that dossier's step still waits. Posting twice is harmless: same bytes, no
    second artefact, no second decision.
    """
    from flows.pipeline import steps
    from flows.signature.certs import CertificateRefused, common_name
    from flows.signature.remote import (
        SIGNATURES_FORMAT,
        RemoteSignatureRefused,
        apply_signatures,
        load_prepared,
    )

    if not isinstance(posted, dict) or posted.get("format") != SIGNATURES_FORMAT:
        raise SigningError(400, "Réponse de l'agent d'un format inconnu (demat-signatures/1 attendu).",
                           "Mettez à jour demat-signer.")
    sigs = posted.get("signatures") or {}
    if not isinstance(sigs, dict):
        raise SigningError(400, "« signatures » doit être un objet {élément: valeur en base64}.", "Mettez à jour demat-signer.")
    if not isinstance(batch_id, str) or len(batch_id) > 40:
        raise SigningError(404, "Lot de signature inconnu.", "Préparez un nouveau lot (demat-signer sign).")
    trust = trust_config(settings)
    store = ArtefactStore(settings.store_root)
    out = BatchOutcome()
    with session_scope(settings.database_url) as session:
        _tables(session)
        lot = session.get(SignatureLot, batch_id)
        if lot is None or lot.user != user:
            raise SigningError(404, f"Lot de signature « {batch_id} » inconnu.",
                               "Préparez un nouveau lot (demat-signer sign) : un lot ne sert qu'au compte qui l'a demandé.")
        if posted.get("certificate") and _der(posted["certificate"]) != base64.b64decode(lot.certificate):
            raise SigningError(422, "Les signatures viennent d'un autre certificat que celui pour lequel le lot a été "
                                    "préparé : refusées, rien n'est appliqué.",
                               "Signez avec le support présenté lors de la préparation, ou préparez un nouveau lot.")
        rows = session.execute(select(SignaturePreparee).where(SignaturePreparee.lot_id == batch_id)
                               .order_by(SignaturePreparee.id)).scalars().all()
        refs = {r.dossier_id: (r.step, r.kind) for r in rows}
    for item in sigs:
        if str(item).partition("/")[0] not in refs:
            out.refused[str(item)[:200]] = f"Signature reçue pour « {str(item)[:120]} », qui n'est pas dans ce lot : ignorée."
    for ref, (number, kind) in refs.items():
        mine = {k: v for k, v in sigs.items() if str(k).partition("/")[0] == ref}
        with session_scope(settings.database_url) as session:
            lock(session, f"signature-{ref}")
            row = session.execute(select(SignaturePreparee).where(SignaturePreparee.lot_id == batch_id,
                                                                  SignaturePreparee.dossier_id == ref)
                                  .with_for_update()).scalar_one()
            dossier = service.get(session, ref, for_update=True)
            coll = settings.config.collectivite(dossier.collectivite)
            done = (dossier.extra or {}).get("signature_support") or {}
            if row.signed_sha256 or (done.get("step") == number and done.get("sha256")):
                out.signed.append(ref)
                out.completed.append((ref, number))
                continue
            if _waiting_step(settings, coll, dossier) != number:
                for k in mine:
                    out.refused[k] = f"Le dossier {ref} n'attend plus cette signature (état : {dossier.state}) : ignorée."
                continue
            official = coll.official(signature_step(coll, dossier)[1].official)
            prepared = load_prepared(row.prepared)
            original = store.get(dossier.sha256) if kind == "pes" else None
            if kind == "pes":
                prepared.document = original
            try:
                applied = apply_signatures({ref: prepared}, {"format": SIGNATURES_FORMAT, "signatures": mine},
                                           already={ref: _unb64(row.accepted)}, trust=trust,
                                           expected=expected_signer(official))
            except (CertificateRefused, RemoteSignatureRefused) as exc:
                for k in mine or {f"{ref}/*": None}:
                    out.refused[k] = str(exc)
                continue
            out.refused.update(applied.refused)
            row.accepted = _b64(applied.accepted.get(ref, {}))
            if ref in applied.waiting:
                out.waiting[ref] = applied.waiting[ref]
                if mine:
                    service.wait(session, dossier, f"Signature sur le support de {official.name} incomplète : "
                                                   f"{len(applied.waiting[ref])} élément(s) restent à signer (lot {batch_id}).")
                continue
            signed = applied.signed[ref]
            name, _media, doc = _document_bytes(settings, store, dossier) if kind == "xades" else (None, None, None)
            problem = _verify_signed(kind, signed, doc, trust)
            if problem:
                row.accepted = {}
                for k in mine:
                    out.refused[k] = f"Dossier {ref} : {problem}. Rien n'est transmis ; signez de nouveau."
                continue
            if kind == "pes":
                art = service.attach(session, store, dossier, kind="signed", name=f"signe-{dossier.original_name}",
                                     data=signed, media_type="application/xml")
            elif kind == "pdf":
                art = service.attach(session, store, dossier, kind="signed", name=f"signe-{prepared.name}",
                                     data=signed, media_type="application/pdf")
            else:
                art = service.attach(session, store, dossier, kind="signature",
                                     name=f"{Path(name).stem}-signature.xml", data=signed, media_type="application/xml")
            cert = prepared.cert
            from flows.signature.trust import fingerprint

            parts = len(prepared.digests())
            what = f"{parts} bordereau(x) du PES" if kind == "pes" else (
                "l'acte (PAdES)" if kind == "pdf" else "l'acte (XAdES détachée, fichier 99_SE)")
            row.signed_sha256 = art.sha256
            row.applied_at = service.now()
            dossier.extra = {**(dossier.extra or {}), "signature_support": {
                "step": number, "sha256": art.sha256, "artefact": art.kind, "kind": kind, "lot": batch_id,
                "certificate_sha256": fingerprint(cert), "subject": common_name(cert), "user": user,
                "official": official.id, "signer": official.name, "role": official.role, "parts": parts}}
            service.note(session, dossier, event="signature_support", actor=official.name,
                         message=(f"Signé sur le support de {official.name} ({official.role}) : {what}, certificat "
                                  f"« {common_name(cert)} » (SHA-256 {fingerprint(cert)[:16]}…), lot {batch_id}. "
                                  "Signature vérifiée par demat."),
                         details={"lot": batch_id, "certificate_sha256": fingerprint(cert), "signed_sha256": art.sha256,
                                  "user": user, "step": number, "kind": kind})
            out.signed.append(ref)
            out.completed.append((ref, number))
    for ref, number in out.completed:  # its own transaction: record_decision locks the dossier itself
        with session_scope(settings.database_url) as session:
            d = service.get(session, ref)
            official = settings.config.collectivite(d.collectivite).official(d.extra["signature_support"]["official"])
        steps.record_decision(settings, ref, {"chosen_options": [steps.APPROVE], "params_input": {},
                                              "responded_by_user": {"id": user, "name": official.name}}, step=number)
    return out


def reject(settings: Settings, user: str, dossier_id: str, motif: str) -> int:
    """The official refuses to sign, with a motive: the same rejection as the Parapheur page's. Returns the step."""
    from flows.pipeline import steps

    clean = steps.plain_text(motif or "", 500)
    if not clean:
        raise SigningError(422, "Le motif du rejet est obligatoire.", "Indiquez pourquoi vous refusez de signer (--motif).")
    with session_scope(settings.database_url) as session:
        _dossier, _coll, official, number = _pending_dossier(settings, session, user, dossier_id)
    steps.record_decision(settings, dossier_id, {"chosen_options": [steps.REJECT], "params_input": {"motif": clean},
                                                 "responded_by_user": {"id": user, "name": official.name}}, step=number)
    return number


def token_signed(dossier: Dossier, step: int) -> dict | None:
    """The token signature recorded for this step, if any (read by steps.sign)."""
    done = (dossier.extra or {}).get("signature_support") or {}
    return done if done.get("step") == step and done.get("sha256") else None


# --------------------------------------------------------------------------------------------- page and demo
def token_id(coll: Collectivite, official) -> str:
    """The demo token's id for an official (flows.signature.softhsm: label `demat-<id>`, PIN `<id>.pin`)."""
    return official.certificate or f"{official.id}-{coll.slug}"


def token_label(coll: Collectivite, official) -> str:
    return f"demat-{token_id(coll, official)}"[:32]


def awaiting_token(settings: Settings, dossier: Dossier, step: int) -> dict | None:
    """For the Parapheur page: when step `step` of this dossier is signed on the official's token (not
    approvable in the page), who signs and how (the demat-signer command); else None."""
    try:
        coll = settings.config.collectivite(dossier.collectivite)
    except KeyError:
        return None
    found = signature_step(coll, dossier)
    if found is None or found[0] != step or not on_token(settings, coll, dossier):
        return None
    official = coll.official(found[1].official)
    demo = (settings.state_dir / "softhsm" / f"{token_id(coll, official)}.pin").exists()
    label = token_label(coll, official) if demo else "<nom de votre support>"
    url = settings.public_url or "http://127.0.0.1:8080"
    return {"signataire": f"{official.name} ({official.role})", "support": label,
            "commande": f"demat-signer sign --url {url} --username <votre compte> --token-label {label}"}


LEGACY_ENV = "DEMAT_LEGACY_PKCS12"  # "1": the embedded platform still gives officials a PKCS#12 (older tests)


def provision_demo_supports(state_dir: Path, pki_dir: Path, config, *, seal_holder: str) -> dict | None:
    """The embedded default's signature supports: one SoftHSM2 token per official, one for the seal.

    Keys are generated on the tokens by the demo CA of `pki_dir`; PINs go to `<state>/softhsm/<id>.pin`
    (0600), and `tokens.json` tells the demo's simulated officials which token is theirs (no PIN in
    it). Officials' PKCS#12 files left by an older state are deleted: no private key with its password
    remains in the platform's state. None when SoftHSM2 is not installed (the caller falls back).
    """
    import json
    import shutil

    from flows.signature.softhsm import provision_tokens
    from flows.signature.token import default_module

    if shutil.which("softhsm2-util") is None or not Path(default_module()).exists():
        return None
    officials, users = [], {}
    for c in config.collectivites:
        for o in c.officials:
            tid = token_id(c, o)
            if tid not in [x[0] for x in officials]:
                officials.append((tid, o.name, o.role))
            for u in o.users:
                users[u] = {"token": tid, "label": token_label(c, o), "official": o.name}
    directory = Path(state_dir) / "softhsm"
    out = provision_tokens(directory, officials, pki_dir=pki_dir, seal=seal_holder)
    for u in users.values():
        info = out["officials"][u["token"]]
        u.update(label=info["label"], pin_file=info["pin_file"])
    out["users"] = users
    tmp = directory / ".tokens.json.tmp"
    tmp.write_text(json.dumps({"conf": out["conf"], "module": out["module"], "users": users}, ensure_ascii=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, directory / "tokens.json")
    for tid, _n, _r in officials:  # an older state's server-side keys of the officials
        for suffix in (".p12", ".pass"):
            (Path(pki_dir) / f"{tid}{suffix}").unlink(missing_ok=True)
    return out


def refresh_crls(settings: Settings) -> dict[str, str]:
    """The nightly CRL refresh: each `signature.crl_urls` entry ({file: URL}) downloaded and swapped in
    atomically; a download that is not a CRL keeps the last good file. {file: French outcome}."""
    from flows.signature.certs import CertificateRefused
    from flows.signature.trust import refresh_crl

    out = {}
    for name, url in settings.config.signature.crl_urls.items():
        path = Path(name) if Path(name).is_absolute() else settings.state_dir / name
        try:
            refresh_crl(url, path)
            out[name] = f"CRL {name} mise à jour depuis {url}."
        except CertificateRefused as exc:
            out[name] = str(exc)
    return out


def token_alerts(settings: Settings, *, within_days: int, at: datetime | None = None) -> list[tuple]:
    """Expiry alerts for certificates on tokens: each official's, as their agent last presented it
    (stored with the batches), and the seal's, read from the HSM. [(ExpiryAlert, collectivité, official)];
    the alert's source names the support (`support-<id>`, `cachet-serveur`), never a secret."""
    import dataclasses

    from cryptography import x509

    from flows.signature.certs import common_name
    from flows.signature.watch import token_certificates_expiring

    out: list[tuple] = []
    with session_scope(settings.database_url) as session:
        _tables(session)
        for coll in settings.config.collectivites:
            for official in coll.officials:
                if not official.users or legacy_pkcs12(settings, official) is not None:
                    continue
                rows = session.execute(select(SignatureLot.certificate).where(SignatureLot.user.in_(official.users))
                                       .order_by(SignatureLot.created_at.desc()).limit(20)).scalars()
                der = next((base64.b64decode(c) for c in rows
                            if common_name(x509.load_der_x509_certificate(base64.b64decode(c))) == official.name), None)
                if der is None:
                    continue
                for alert in token_certificates_expiring([der], within_days, at=at):
                    out.append((dataclasses.replace(alert, source=f"support-{token_id(coll, official)}"), coll, official))
    try:
        seal = seal_config(settings)
    except SigningError:
        seal = None
    if seal is not None:
        for alert in token_certificates_expiring([seal.token], within_days, at=at):
            out.append((dataclasses.replace(alert, source=SEAL_KEY_LABEL), None, None))
    return out


def certificate_alerts(settings: Settings, *, within_days: int, at: datetime | None = None) -> tuple[list, dict]:
    """Every certificate expiry alert (flows.alerts.record): the PKCS#12 store's (watch.certificates_expiring),
    without "no PKCS#12" for officials who sign on their token, and the tokens' (`token_alerts`).
    Returns (alerts, {alert source: (collectivité, official)} for the token alerts)."""
    from flows.signature.watch import certificates_expiring

    on_token = {f"{o.certificate}.p12" for c in settings.config.collectivites for o in c.officials
                if o.certificate and legacy_pkcs12(settings, o) is None}
    stored = [a for a in certificates_expiring(settings, within_days=within_days, at=at)
              if not (a.source in on_token and a.level == "illisible")]
    tokens = token_alerts(settings, within_days=within_days, at=at)
    return stored + [a for a, _c, _o in tokens], {a.source: (c, o) for a, c, o in tokens if o is not None}
