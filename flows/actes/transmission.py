"""Build what the platform sends to the ministère: the 1-1 Acte, 6-1 Annulation and the agent's
answers to the préfecture's mail (2-2, 3-2, 3-3, 3-4, 4-2, 4-3, 4-4), each in an
EnveloppeCLMISILL, tar+gzip, ISO-8859-1 XML.

Names: TDT-EACT--SIREN--AAAAMMJJ-serial.tar.gz holding EACT--SIREN--AAAAMMJJ-serial.xml,
IDACTE-1-1_0.xml and TYPEPJ-IDACTE-1-1_n.ext (n = 1 for the acte, 2.. for the annexes).
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from flows.actes import naming
from flows.actes import xmlutil as X
from flows.actes.model import MESSAGE_CODES, ActeMetadata, ActeSubmission, Transmission

if TYPE_CHECKING:
    from flows.actes.classification import Classification
    from flows.config.models import Collectivite

PARIS = ZoneInfo("Europe/Paris")
EMAIL_RE = re.compile(r"^[_a-zA-Z0-9\-]+(\.[_a-zA-Z0-9\-]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*\.[a-zA-Z]{2,6}$")
# Used when the collectivité's address does not fit the @ctes pattern (top-level domain of 2-6 letters).
FALLBACK_RETURN_EMAIL = "actes@demat-tdt.fr"

ANSWER_KINDS = {
    "ReponseCourrierSimple", "ARDemandePieceComplementaire", "RefusPieceComplementaire",
    "PieceComplementaire", "ARLettreObservations", "RejetLettreObservations", "ReponseLettreObservations",
}
_NEEDS_ONE_DOCUMENT = {"ReponseCourrierSimple", "RefusPieceComplementaire", "RejetLettreObservations",
                       "ReponseLettreObservations"}
_NO_DOCUMENT = {"ARDemandePieceComplementaire", "ARLettreObservations"}


def paris_today() -> date:
    return datetime.now(PARIS).date()


def build_acte_xml(metadata: ActeMetadata, document_name: str, annex_names: Sequence[str],
                   classification_date: date) -> bytes:
    """The 1-1 Acte message (DonneesActe)."""
    root = X.root("Acte", Date=metadata.date_decision.isoformat(), NumeroInterne=metadata.numero_interne,
                  CodeNatureActe=str(metadata.nature_code))
    fill_donnees_acte(root, metadata, document_name, annex_names, classification_date)
    return X.to_bytes(root)


def fill_donnees_acte(el, metadata: ActeMetadata, document_name: str, annex_names: Sequence[str],
                      classification_date: date) -> None:
    for i, code in enumerate(metadata.matiere_codes[:5], 1):
        X.sub(el, f"CodeMatiere{i}", CodeMatiere=str(code))
    X.sub(el, "Objet", metadata.objet)
    if metadata.precedent_idacte:
        X.sub(el, "PrecedentIdentifiantActe", IDActe=metadata.precedent_idacte)
    X.sub(el, "ClassificationDateVersion", classification_date.isoformat())
    X.sub(X.sub(el, "Document"), "NomFichier", document_name)
    annexes = X.sub(el, "Annexes", Nombre=str(len(annex_names)))
    for name in annex_names:
        X.sub(X.sub(annexes, "Annexe"), "NomFichier", name)
    X.sub(el, "DocumentPapier", "O" if metadata.document_papier else "N")


def return_email(collectivite: Collectivite, email: str | None, warnings: list[str]) -> str:
    candidate = email or collectivite.email
    if EMAIL_RE.match(candidate):
        return candidate
    warnings.append(
        f"L'adresse de retour « {candidate} » ne respecte pas le format @ctes (domaine de premier niveau de "
        f"2 à 6 lettres) : « {FALLBACK_RETURN_EMAIL} » est utilisée. Corrigez l'adresse de la collectivité."
    )
    return FALLBACK_RETURN_EMAIL


def build_envelope_xml(collectivite: Collectivite, formulaires: Iterable[str], emails: Sequence[str]) -> bytes:
    """EnveloppeCLMISILL: who sends (IDCL), where to answer, which XML messages are inside."""
    root = X.root("EnveloppeCLMISILL")
    emetteur = X.sub(root, "Emetteur")
    idcl = X.sub(emetteur, "IDCL", Departement=collectivite.departement,
                 Arrondissement=str(collectivite.arrondissement), Nature=collectivite.nature)
    idcl.set(X.qi("SIREN"), collectivite.siren)
    adresses = X.sub(root, "AdressesRetour")
    for e in emails:
        X.sub(adresses, "Email", e)
    formulaires_el = X.sub(root, "FormulairesEnvoyes")
    for name in formulaires:
        X.sub(X.sub(formulaires_el, "Formulaire"), "NomFichier", name)
    return X.to_bytes(root)


def make_tar_gz(members: Sequence[tuple[str, bytes]], day: date) -> bytes:
    """Deterministic tar+gzip (fixed mtimes, root owner, 0644), flat names."""
    mtime = int(datetime.combine(day, time(12, 0), tzinfo=UTC).timestamp())
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = mtime
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def package_messages(collectivite: Collectivite, *, kind: str, idacte: str, message_name: str,
                     message_xml: bytes, files: dict[str, bytes], serial: int, trigram: str = "TDT",
                     day: date | None = None, email: str | None = None) -> Transmission:
    """Wrap one message and its files in an envelope and a tar.gz."""
    day = day or paris_today()
    if serial < 1:
        raise ValueError("le numéro d'ordre de l'enveloppe (serial) doit être un entier ≥ 1")
    warnings: list[str] = []
    env_name = naming.envelope_name(collectivite.siren, day, serial)
    env_xml = build_envelope_xml(collectivite, [message_name], [return_email(collectivite, email, warnings)])
    members = [(env_name, env_xml), (message_name, message_xml), *files.items()]
    return Transmission(
        idacte=idacte, archive_name=naming.archive_name(trigram, env_name),
        archive_bytes=make_tar_gz(members, day), envelope_name=env_name, envelope_xml=env_xml,
        message_name=message_name, message_xml=message_xml, files=dict(files), kind=kind,
        code=MESSAGE_CODES[kind], warnings=warnings,
    )


def build_transmission(submission: ActeSubmission, collectivite: Collectivite, *, serial: int,
                       trigram: str = "TDT", day: date | None = None, email: str | None = None,
                       classification: Classification | None = None) -> Transmission:
    """The 1-1 transmission of an acte. The ClassificationDateVersion is the one the agent gave, else
    the current classification's; ValueError (French) when neither is known."""
    md = submission.metadata
    cdate = md.classification_date or (classification.date if classification is not None else None)
    if cdate is None:
        raise ValueError(
            "date de la classification inconnue : indiquez classification_date ou chargez la classification "
            "de la préfecture (DemandeClassification) avant de transmettre"
        )
    idacte = naming.make_idacte(collectivite.departement, collectivite.siren, md.date_decision,
                                md.numero_interne, md.nature)
    main_typo = md.typologie or submission.document.typologie
    files: dict[str, bytes] = {}
    doc_name = naming.document_name(idacte, "1-1", 1, submission.document.extension or "pdf", main_typo)
    files[doc_name] = submission.document.data
    annex_names = []
    for i, annex in enumerate(submission.annexes, 2):
        name = naming.document_name(idacte, "1-1", i, annex.extension or "pdf", annex.typologie or main_typo)
        annex_names.append(name)
        files[name] = annex.data
    message_xml = build_acte_xml(md, doc_name, annex_names, cdate)
    return package_messages(
        collectivite, kind="Acte", idacte=idacte, message_name=naming.message_name(idacte, "1-1"),
        message_xml=message_xml, files=files, serial=serial, trigram=trigram, day=day, email=email,
    )


def build_annulation(idacte: str, collectivite: Collectivite, *, serial: int, trigram: str = "TDT",
                     day: date | None = None, email: str | None = None) -> Transmission:
    """6-1: ask the ministère to cancel the transmission of an acte."""
    naming.parse_idacte(idacte)
    message_xml = X.to_bytes(X.root("Annulation", IDActe=idacte))
    return package_messages(
        collectivite, kind="Annulation", idacte=idacte, message_name=naming.message_name(idacte, "6-1"),
        message_xml=message_xml, files={}, serial=serial, trigram=trigram, day=day, email=email,
    )


def build_answer_xml(kind: str, idacte: str, date_courrier_pref: date, document_names: Sequence[str]) -> bytes:
    root = X.root(kind, IDActe=idacte, DateCourrierPref=date_courrier_pref.isoformat())
    if kind == "PieceComplementaire":
        docs = X.sub(root, "Documents")
        for name in document_names:
            X.sub(X.sub(docs, "Document"), "NomFichier", name)
    elif kind in _NEEDS_ONE_DOCUMENT:
        X.sub(X.sub(root, "Document"), "NomFichier", document_names[0])
    return X.to_bytes(root)


def build_answer(kind: str, idacte: str, date_courrier_pref: date, collectivite: Collectivite, *,
                 documents: Sequence[tuple[str, bytes]] = (), serial: int, trigram: str = "TDT",
                 day: date | None = None, email: str | None = None) -> Transmission:
    """An answer of the collectivité to a courrier of the préfecture (kind or code "3-4")."""
    from flows.actes.model import KIND_BY_CODE

    kind = KIND_BY_CODE.get(kind, kind)
    if kind not in ANSWER_KINDS:
        raise ValueError(f"« {kind} » n'est pas une réponse de la collectivité (attendu : {sorted(ANSWER_KINDS)})")
    naming.parse_idacte(idacte)
    code = MESSAGE_CODES[kind]
    if kind in _NO_DOCUMENT and documents:
        raise ValueError(f"un message {kind} ({code}) ne porte pas de document")
    if kind in _NEEDS_ONE_DOCUMENT and len(documents) != 1:
        raise ValueError(f"un message {kind} ({code}) porte exactement un document")
    if kind == "PieceComplementaire" and not documents:
        raise ValueError("l'envoi de pièces complémentaires (3-4) doit porter au moins un document")
    files: dict[str, bytes] = {}
    for i, (name, data) in enumerate(documents, 1):
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else "pdf"
        files[naming.document_name(idacte, code, i, ext)] = data
    message_xml = build_answer_xml(kind, idacte, date_courrier_pref, list(files))
    return package_messages(
        collectivite, kind=kind, idacte=idacte, message_name=naming.message_name(idacte, code),
        message_xml=message_xml, files=files, serial=serial, trigram=trigram, day=day, email=email,
    )


def build_reponse_courrier_simple(idacte, date_courrier_pref, collectivite, document, **kw) -> Transmission:
    """2-2: answer to a courrier simple, one document (name, bytes)."""
    return build_answer("ReponseCourrierSimple", idacte, date_courrier_pref, collectivite, documents=[document], **kw)


def build_ar_demande_pieces(idacte, date_courrier_pref, collectivite, **kw) -> Transmission:
    """3-2: acknowledge a request for additional documents."""
    return build_answer("ARDemandePieceComplementaire", idacte, date_courrier_pref, collectivite, **kw)


def build_refus_pieces(idacte, date_courrier_pref, collectivite, document, **kw) -> Transmission:
    """3-3: explicit refusal to send the requested documents (with a letter)."""
    return build_answer("RefusPieceComplementaire", idacte, date_courrier_pref, collectivite, documents=[document], **kw)


def build_pieces_complementaires(idacte, date_courrier_pref, collectivite, documents, **kw) -> Transmission:
    """3-4: send the requested documents."""
    return build_answer("PieceComplementaire", idacte, date_courrier_pref, collectivite, documents=documents, **kw)


def build_ar_lettre_observations(idacte, date_courrier_pref, collectivite, **kw) -> Transmission:
    """4-2: acknowledge a lettre d'observations."""
    return build_answer("ARLettreObservations", idacte, date_courrier_pref, collectivite, **kw)


def build_rejet_lettre_observations(idacte, date_courrier_pref, collectivite, document, **kw) -> Transmission:
    """4-3: explicit refusal to answer a lettre d'observations."""
    return build_answer("RejetLettreObservations", idacte, date_courrier_pref, collectivite, documents=[document], **kw)


def build_reponse_lettre_observations(idacte, date_courrier_pref, collectivite, document, **kw) -> Transmission:
    """4-4: answer a lettre d'observations."""
    return build_answer("ReponseLettreObservations", idacte, date_courrier_pref, collectivite, documents=[document], **kw)
