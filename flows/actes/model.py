"""Data of the @ctes flow: acte metadata, submissions, messages, archives.

Plain dataclasses: the domain is read and built by pure functions, the dossier layer stores them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

NS_ACTES = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
NS_INSEE = "http://xml.insee.fr/schema"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"actes": NS_ACTES, "insee": NS_INSEE, "xsi": NS_XSI}

# Nature of an acte: abbreviation -> (code, French label)
NATURES: dict[str, tuple[int, str]] = {
    "DE": (1, "Délibérations"),
    "AR": (2, "Actes réglementaires"),
    "AI": (3, "Actes individuels"),
    "CC": (4, "Contrats, conventions et avenants"),
    "BF": (5, "Documents budgétaires et financiers"),
    "AU": (6, "Autres"),
}
NATURE_BY_CODE: dict[int, str] = {code: abbr for abbr, (code, _) in NATURES.items()}

NUMERO_RE = re.compile(r"^([A-Z0-9][A-Z0-9_]{0,13})?[A-Z0-9]$")
MATIERE_RE = re.compile(r"^[1-9][0-9]?(\.[1-9][0-9]?){1,4}$")
TYPOLOGIE_RE = re.compile(r"^[0-9]{2}_[A-Z0-9]{2}$")
OBJET_MAX = 499

# Message kinds (root element) -> code "TYPE-SOUSTYPE" (cahier des charges @ctes, as used by S²LOW).
MESSAGE_CODES: dict[str, str] = {
    "Acte": "1-1",
    "ARActe": "1-2",
    "AnomalieActe": "1-3",
    "CourrierSimple": "2-1",
    "ReponseCourrierSimple": "2-2",
    "DemandePieceComplementaire": "3-1",
    "ARDemandePieceComplementaire": "3-2",
    "RefusPieceComplementaire": "3-3",
    "PieceComplementaire": "3-4",
    "ARPieceComplementaire": "3-5",
    "LettreObservations": "4-1",
    "ARLettreObservations": "4-2",
    "RejetLettreObservations": "4-3",
    "ReponseLettreObservations": "4-4",
    "ARReponseRejetLettreObservations": "4-5",
    "DefereTA": "5-1",
    "Annulation": "6-1",
    "ARAnnulation": "6-2",
    "DemandeClassification": "7-1",
    "RetourClassification": "7-2",
    "ReponseClassificationSansChangement": "7-3",
}
KIND_BY_CODE: dict[str, str] = {code: kind for kind, code in MESSAGE_CODES.items()}
ENVELOPE_KINDS = ("EnveloppeCLMISILL", "EnveloppeMISILLCL")


def nature_abbr(value: str | int) -> str:
    """'DE', 'de', 1 or '1' -> 'DE'; ValueError (French) otherwise."""
    text = str(value).strip().upper()
    if text in NATURES:
        return text
    if text.isdigit() and int(text) in NATURE_BY_CODE:
        return NATURE_BY_CODE[int(text)]
    raise ValueError(f"nature d'acte inconnue « {value} » (attendu : DE, AR, AI, CC, BF ou AU, ou 1 à 6)")


@dataclass(frozen=True)
class ActeMetadata:
    """What the agent declares about an acte (the signalétique sent as the 1-1 Acte message)."""

    nature: str  # DE, AR, AI, CC, BF, AU
    matiere: str  # "7.10.2"
    numero_interne: str
    objet: str
    date_decision: date
    typologie: str = ""  # of the main document, e.g. "99_DE"
    classification_date: date | None = None
    annexes_typologies: tuple[str, ...] = ()
    precedent_idacte: str | None = None
    document_papier: bool = False

    @property
    def nature_code(self) -> int:
        return NATURES.get(self.nature, (0, ""))[0]

    @property
    def nature_label(self) -> str:
        return NATURES.get(self.nature, (0, f"nature inconnue {self.nature}"))[1]

    @property
    def matiere_codes(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.matiere.split("."))


@dataclass(frozen=True)
class Document:
    """One file of an acte: its name as given by the agent, content and typologie (CodeTypePJ)."""

    name: str
    data: bytes = field(repr=False)
    typologie: str = ""

    @property
    def extension(self) -> str:
        return self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""


@dataclass
class ActeSubmission:
    """An acte as deposited by an agent: metadata, main document, annexes."""

    metadata: ActeMetadata
    document: Document
    annexes: list[Document] = field(default_factory=list)
    metadata_format: str = "xml"  # "xml" or "json"
    metadata_file: str = ""
    unreferenced: list[str] = field(default_factory=list)  # ZIP members the metadata does not name
    duplicate_references: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Document]:
        return [self.document, *self.annexes]


@dataclass
class ActesMessage:
    """One @ctes message, read from XML. `summary_fr` tells the agent what happened and what to do."""

    kind: str  # root element: ARActe, AnomalieActe, CourrierSimple...
    code: str  # "1-2"
    idacte: str = ""
    date: date | None = None
    nature: str = ""  # anomaly code "002" (AnomalieActe/AnomalieEnveloppe)
    nature_label: str = ""
    detail: str = ""
    documents: list[str] = field(default_factory=list)
    summary_fr: str = ""
    acte: ActeMetadata | None = None  # Acte / ActeRecu
    acte_documents: list[str] = field(default_factory=list)
    classification_date: date | None = None  # ClassificationDateVersionEnCours / DateClassification
    date_courrier_pref: date | None = None
    siren: str = ""
    departement: str = ""
    arrondissement: str = ""
    emails: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_errors: list[str] = field(default_factory=list)
    name: str = ""  # file name, when known
    data: bytes = field(default=b"", repr=False)  # the XML as received

    @property
    def label_fr(self) -> str:
        return MESSAGE_LABELS.get(self.kind, self.kind)


class MessageList(list):
    """The messages of an archive, in envelope order. Iterating yields ActesMessage objects (each with
    .name and .data); it also answers like a mapping by file name (keys, values, items, get, [name])."""

    def keys(self) -> list[str]:
        return [m.name for m in self]

    def values(self) -> list[ActesMessage]:
        return list(self)

    def items(self) -> list[tuple[str, ActesMessage]]:
        return [(m.name, m) for m in self]

    def get(self, name: str, default: ActesMessage | None = None) -> ActesMessage | None:
        return next((m for m in self if m.name == name), default)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            found = self.get(key)
            if found is None:
                raise KeyError(key)
            return found
        return super().__getitem__(key)

    def __contains__(self, item) -> bool:
        if isinstance(item, str):
            return any(m.name == item for m in self)
        return super().__contains__(item)


@dataclass
class ActesArchive:
    """A tar.gz exchanged with the ministère, read in memory."""

    name: str
    envelope_name: str
    envelope: ActesMessage | None
    messages: MessageList = field(default_factory=MessageList)  # envelope order; also a mapping by name
    documents: dict[str, bytes] = field(default_factory=dict)  # non-message files
    members: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # French, non-fatal (file announced but absent...)
    notes: list[str] = field(default_factory=list)  # French warnings: kept and read, but worth saying

    def message(self, name: str) -> ActesMessage | None:
        return next((m for m in self.messages if m.name == name), None)


@dataclass
class Transmission:
    """A tar.gz ready to be deposited for the ministère, with what was put in it."""

    idacte: str
    archive_name: str
    archive_bytes: bytes = field(repr=False)
    envelope_name: str
    envelope_xml: bytes = field(repr=False)
    message_name: str
    message_xml: bytes = field(repr=False)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # renamed documents
    kind: str = "Acte"
    code: str = "1-1"
    warnings: list[str] = field(default_factory=list)

    @property
    def members(self) -> list[str]:
        return [self.envelope_name, self.message_name, *self.files]


MESSAGE_LABELS: dict[str, str] = {
    "Acte": "Transmission d'un acte",
    "ARActe": "Accusé de réception d'un acte",
    "AnomalieActe": "Anomalie sur un acte",
    "AnomalieEnveloppe": "Anomalie sur une enveloppe",
    "CourrierSimple": "Courrier simple de la préfecture",
    "ReponseCourrierSimple": "Réponse à un courrier simple",
    "DemandePieceComplementaire": "Demande de pièces complémentaires",
    "ARDemandePieceComplementaire": "Accusé de réception d'une demande de pièces complémentaires",
    "RefusPieceComplementaire": "Refus d'envoyer des pièces complémentaires",
    "PieceComplementaire": "Envoi de pièces complémentaires",
    "ARPieceComplementaire": "Accusé de réception des pièces complémentaires (ou du refus)",
    "LettreObservations": "Lettre d'observations",
    "ARLettreObservations": "Accusé de réception d'une lettre d'observations",
    "RejetLettreObservations": "Refus de répondre à une lettre d'observations",
    "ReponseLettreObservations": "Réponse à une lettre d'observations",
    "ARReponseRejetLettreObservations": "Accusé de réception de la réponse (ou du refus) à une lettre d'observations",
    "DefereTA": "Déféré au tribunal administratif",
    "Annulation": "Annulation de la transmission d'un acte",
    "ARAnnulation": "Accusé de réception d'une annulation",
    "DemandeClassification": "Demande de classification",
    "RetourClassification": "Classification des actes (matières et typologies)",
    "ReponseClassificationSansChangement": "Classification inchangée",
    "EnveloppeCLMISILL": "Enveloppe collectivité vers ministère",
    "EnveloppeMISILLCL": "Enveloppe ministère vers collectivité",
}
