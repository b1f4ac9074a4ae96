"""The configuration model. Adding a collectivité is one YAML entry; errors name the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret

DocType = Literal[
    "deliberation", "arrete", "contrat", "budget", "autre", "pes_depense", "pes_recette", "pes"
]


MAX_CIRCUIT_STEPS = 5
"""Human steps a circuit may hold: the dossier DAGs carry this many parapheur tasks, unused ones skipped."""


class ConfigError(ValueError):
    """The configuration file is invalid; the message is in French and names each faulty field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Official(_Strict):
    """An elected official or director who signs."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    role: str  # "Maire", "Président", "Ordonnateur", ...
    # legacy fallback only: a PKCS#12 in the platform's certificate store (file stem), used when
    # `signature` is "pkcs12", or "auto" and that file exists. Otherwise the official signs on
    # their own token through demat-signer (docs/signature.md): no private key on the platform.
    certificate: str | None = None
    users: list[str] = Field(default_factory=list)  # Airflow user names allowed to act for them
    # "support": always on the official's token; "pkcs12": the legacy server-side PKCS#12;
    # "auto": the PKCS#12 named by `certificate` if present in the store, else the token
    signature: Literal["auto", "support", "pkcs12"] = "auto"
    cert_sha256: str | None = None  # the official's registered certificate (SHA-256 of the DER), if known

    @field_validator("cert_sha256")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        clean = v.replace(":", "").strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", clean):
            raise ValueError(f"empreinte de certificat « {v} » invalide (SHA-256 : 64 caractères hexadécimaux)")
        return clean

    @model_validator(mode="after")
    def _legacy(self) -> Official:
        if self.signature == "pkcs12" and not self.certificate:
            raise ValueError(f"l'élu « {self.id} » signe par PKCS#12 (signature: pkcs12) mais « certificate » "
                             "ne nomme aucun fichier : nommez-le, ou choisissez « signature: support »")
        return self


class Step(_Strict):
    kind: Literal["VISA", "SIGNATURE", "AUTO"]
    official: str | None = None  # SIGNATURE: the signing Official.id; AUTO: signs automatically with it
    users: list[str] = Field(default_factory=list)  # for VISA: any of these may approve
    deadline_days: int = Field(default=30, ge=1, le=365)

    @model_validator(mode="after")
    def _check(self) -> Step:
        if self.kind == "SIGNATURE" and not self.official:
            raise ValueError("une étape SIGNATURE doit nommer l'élu signataire (champ « official »)")
        if self.kind == "VISA" and not self.users:
            raise ValueError("une étape VISA doit nommer au moins un utilisateur (champ « users »)")
        return self


class ArchiveProfile(_Strict):
    archival_agreement: str = "DEMAT-ACCORD"
    archival_profile: str = ""
    appraisal_rule: str = "APP0001"
    dua_years: int = Field(default=10, ge=0, le=200)
    final_action: Literal["Keep", "Destroy"] = "Keep"
    access_rule: str = "AR038"


class HeliosSettings(_Strict):
    idpost: str = Field(pattern=r"^\d{6}$")
    codcol: str = Field(pattern=r"^[0-9A-Z]{1,3}$")
    codbud: str = Field(pattern=r"^[0-9A-Z]{1,2}$")
    libelle: str = ""


EMAIL_RE = re.compile(r"^[^@\s<>\"',;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


def _check_emails(emails: dict[str, str]) -> dict[str, str]:
    """`{Airflow user: address}`: each address must look like one (no display name, no list)."""
    for user, address in emails.items():
        if not EMAIL_RE.match(address or ""):
            raise ValueError(f"adresse e-mail « {address} » de l'utilisateur « {user} » invalide "
                             "(attendu : nom@domaine.fr)")
    return emails


class AlertSettings(_Strict):
    """E-mail alerts: who hears about what and how often. Every field is optional."""

    digest_minutes: int = Field(default=60, ge=1, le=1440)  # at most one digest per recipient per period
    operators: list[str] = Field(default_factory=list)  # Airflow users or addresses; empty: DEMAT_OPERATORS
    parapheur_warning_days: int = Field(default=3, ge=1, le=60)  # warn this long before a step's deadline
    certificate_thresholds_days: list[int] = Field(default_factory=lambda: [30, 7, 1])
    sender: str | None = None  # From address; None: the SMTP connection's `from_email`

    @field_validator("certificate_thresholds_days")
    @classmethod
    def _thresholds(cls, v: list[int]) -> list[int]:
        if not v or any(d < 0 or d > 365 for d in v):
            raise ValueError("au moins un seuil, chacun entre 0 et 365 jours")
        return sorted(set(v), reverse=True)


class RetentionSettings(_Strict):
    """How long Airflow keeps finished runs (demat's own dossier record is kept for good)."""

    dossier_runs_days: int = Field(default=30, ge=1, le=3650)  # runs of final dossiers
    periodic_runs_days: int = Field(default=3, ge=1, le=3650)  # collection, alerts, ingest... runs
    # documents (artefacts) of a dossier archived by the SAE: purged from demat's store this many days
    # after the SAE confirmed the archive (never before); 0 = kept. Per collectivité and flux:
    # Collectivite.documents_retention_days overrides it (flows.pipeline.documents_retention)
    documents_days: int = Field(default=365, ge=0, le=36500)


class Collectivite(_Strict):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    siren: str
    siret: str
    departement: str = Field(pattern=r"^(0\d[0-9AB]|\d{3})$")
    arrondissement: int = Field(ge=0, le=9)
    nature: str = Field(pattern=r"^\d{2}$")  # @ctes nature of the collectivité: 31 commune, 44 CC, ...
    email: str = "contact@example.invalid"
    flows: list[Literal["actes", "helios"]] = Field(default_factory=lambda: ["actes", "helios"])
    helios: HeliosSettings | None = None
    officials: list[Official] = Field(default_factory=list)
    circuits: dict[str, list[Step]] = Field(default_factory=dict)
    archive: dict[str, ArchiveProfile] = Field(default_factory=lambda: {"default": ArchiveProfile()})
    deposit: Literal["immediate", "nightly"] = "immediate"
    # how an acte is signed after its SIGNATURE step: "pades" = signature inside the PDF;
    # "detachee" = detached XAdES sent as the 99_SE signature file; "aucune" = transmitted
    # unsigned (the approval stays in the journal)
    acte_signature: Literal["aucune", "detachee", "pades"] = "aucune"
    # automatic signatures of this collectivité by the server seal (HSM) instead of the official's token:
    # its SIGNATURE step is then an approval in the Parapheur page, followed by the seal
    cachet_serveur: bool = False
    agents: list[str] = Field(default_factory=list)  # Airflow users of this collectivité
    # @ctes natures (DE, AR, AI, CC, BF, AU) published electronically as soon as acknowledged
    publication_auto: list[Literal["DE", "AR", "AI", "CC", "BF", "AU"]] = Field(default_factory=list)
    # days after the SAE's confirmation before the documents of a flux are purged (0 = kept)
    documents_retention_days: dict[Literal["actes", "helios"], int] = Field(default_factory=dict)
    emails: dict[str, str] = Field(default_factory=dict)  # Airflow user -> e-mail address, for alerts

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_emails(v)

    @field_validator("siren")
    @classmethod
    def _siren(cls, v: str) -> str:
        if not stdnum_siren.is_valid(v):
            raise ValueError(f"SIREN « {v} » invalide (9 chiffres, clé de Luhn)")
        return v

    @field_validator("siret")
    @classmethod
    def _siret(cls, v: str) -> str:
        if not stdnum_siret.is_valid(v):
            raise ValueError(f"SIRET « {v} » invalide (14 chiffres, clé de Luhn)")
        return v

    @model_validator(mode="after")
    def _consistency(self) -> Collectivite:
        if not self.siret.startswith(self.siren):
            raise ValueError(f"le SIRET {self.siret} ne commence pas par le SIREN {self.siren}")
        if "helios" in self.flows and self.helios is None:
            raise ValueError("le flux « helios » est activé mais la section « helios » (idpost, codcol, codbud) manque")
        ids = {o.id for o in self.officials}
        for doc_type, steps in self.circuits.items():
            human = [s for s in steps if s.kind != "AUTO"]
            if len(human) > MAX_CIRCUIT_STEPS:
                raise ValueError(f"circuit « {doc_type} » : {len(human)} étapes de visa ou de signature, "
                                 f"au plus {MAX_CIRCUIT_STEPS} (regroupez des visas en une étape à plusieurs "
                                 "utilisateurs)")
            if sum(1 for s in steps if s.kind == "SIGNATURE") > 1:
                raise ValueError(f"circuit « {doc_type} » : une seule étape SIGNATURE par circuit "
                                 "(le document est signé une fois, par l'élu de cette étape)")
            for i, step in enumerate(steps, 1):
                if step.official and step.official not in ids:
                    raise ValueError(
                        f"circuit « {doc_type} », étape {i} : l'élu « {step.official} » n'est pas déclaré dans « officials »"
                    )
        return self

    def official(self, official_id: str) -> Official:
        for o in self.officials:
            if o.id == official_id:
                return o
        raise KeyError(official_id)

    def circuit(self, doc_type: str) -> list[Step]:
        """The circuit for a document type, falling back to the flow default then to 'default'."""
        for key in (doc_type, "pes" if doc_type.startswith("pes") else "acte", "default"):
            if key in self.circuits:
                return self.circuits[key]
        return []

    def parapheur_users(self) -> set[str]:
        """Airflow users who answer in this collectivité's parapheur (officials and VISA respondents)."""
        users = {u for o in self.officials for u in o.users}
        return users | {u for steps in self.circuits.values() for s in steps for u in s.users}

    def members(self) -> set[str]:
        """Every Airflow user of this collectivité: agents and parapheur respondents see its dossiers."""
        return set(self.agents) | self.parapheur_users()

    def archive_profile(self, doc_type: str) -> ArchiveProfile:
        return self.archive.get(doc_type) or self.archive.get("default") or ArchiveProfile()


class Counterpart(_Strict):
    """Where a counterpart listens; the secrets (keys) live in Airflow Connections, not here."""

    conn_id: str
    upload_dir: str = "depot"
    reply_dir: str = "retour"


class SignatureSettings(_Strict):
    """How the platform checks the certificates officials present (docs/signature.md).

    Paths are files or folders, relative to the platform's state folder. No `ancres`: the
    platform's own CA (`<pki>/ca.pem`, the demo's). CRL files are refreshed from `crl_urls`
    ({file: URL}) by the nightly DAG."""

    ancres: list[str] = Field(default_factory=list)
    intermediaires: list[str] = Field(default_factory=list)
    crls: list[str] = Field(default_factory=list)
    crl_urls: dict[str, str] = Field(default_factory=dict)
    crl_obligatoire: bool = False  # production: refuse a certificate whose CA has no fresh CRL
    politique_pes: Literal["1.7", "1.4"] = "1.7"

    @field_validator("crl_urls")
    @classmethod
    def _urls(cls, v: dict[str, str]) -> dict[str, str]:
        for path, url in v.items():
            if not re.match(r"^https?://", url or ""):
                raise ValueError(f"adresse de CRL « {url} » pour « {path} » invalide (http:// ou https:// attendu)")
        return v


class PlatformConfig(_Strict):
    trigram: str = Field(default="TDT", pattern=r"^[A-Z0-9]{3}$")
    seda_version: Literal["2.1", "2.2", "2.3"] = "2.2"
    digest_algorithm: str = "SHA-512"
    archival_agency: str = "SAE-DEMO"
    transferring_agency: str = "DEMAT"
    package_format: Literal["tar.gz", "zip"] = "tar.gz"
    stuck_after_hours: dict[str, float] = Field(default_factory=lambda: {"actes": 4, "helios": 24, "sae": 24})
    emails: dict[str, str] = Field(default_factory=dict)  # Airflow user -> e-mail address (operators...)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    signature: SignatureSettings = Field(default_factory=SignatureSettings)
    collectivites: list[Collectivite]

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_emails(v)

    @model_validator(mode="after")
    def _unique(self) -> PlatformConfig:
        seen: set[str] = set()
        for c in self.collectivites:
            if c.slug in seen:
                raise ValueError(f"la collectivité « {c.slug} » est déclarée deux fois")
            seen.add(c.slug)
        return self

    def collectivite(self, slug: str) -> Collectivite:
        for c in self.collectivites:
            if c.slug == slug:
                return c
        raise KeyError(f"collectivité inconnue : {slug}")

    def parapheur_users(self) -> set[str]:
        return {u for c in self.collectivites for u in c.parapheur_users()}

    def airflow_users(self) -> dict[str, tuple[str, str]]:
        """Airflow user -> (simple auth manager role, French label), derived from the collectivités."""
        out: dict[str, tuple[str, str]] = {}
        for c in self.collectivites:
            for u in c.agents:
                out.setdefault(u, ("viewer", f"agent de {c.name} (dépose et suit)"))
            for steps in c.circuits.values():
                for u in (u for s in steps for u in s.users):
                    out[u] = ("user", f"visa au parapheur, {c.name}")
            for o in c.officials:
                for u in o.users:
                    out[u] = ("user", f"signataire, {o.role} ({c.name})")
        return out

    def by_siren(self, siren: str) -> Collectivite | None:
        return next((c for c in self.collectivites if c.siren == siren), None)

    def by_siret(self, siret: str) -> Collectivite | None:
        return next((c for c in self.collectivites if c.siret == siret), None)


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"Configuration invalide : {path}"]
    for err in exc.errors():
        where = " > ".join(str(p) for p in err["loc"])
        msg = re.sub(r"^Value error, ", "", err["msg"])
        lines.append(f"  - {where} : {msg}")
    lines.append("Corrigez ces champs dans le fichier YAML puis relancez.")
    return "\n".join(lines)


def load_config(path: str | Path) -> PlatformConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Fichier de configuration introuvable : {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Configuration illisible (YAML) : {path} : {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Configuration invalide : {path} : le document doit être un dictionnaire YAML")
    try:
        return PlatformConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from exc
