"""Read what the ministère sends (ARActe, AnomalieActe, courriers, déférés, classification...) and
build it for the préfecture simulator.

`parse_message` reads one XML message (any @ctes kind) and explains it in French
(`summary_fr`: what the préfecture said and what the agent must do). `read_archive` opens a
tar.gz from the ministère in memory, safely.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from lxml import etree

from flows import xmlsafe
from flows.actes import naming
from flows.actes import xmlutil as X
from flows.actes.model import (
    ENVELOPE_KINDS,
    KIND_BY_CODE,
    MESSAGE_CODES,
    NATURE_BY_CODE,
    NS_ACTES,
    ActeMetadata,
    ActesArchive,
    ActesMessage,
)
from flows.actes.safearchive import DEFAULT_MAX_TOTAL, read_tar
from flows.actes.transmission import make_tar_gz, paris_today
from flows.helios.xsdtext import error_fr


class MessageError(ValueError):
    """The bytes are not a readable @ctes message (French message)."""


# AnomalieActe natures. Only 002 is attested by a real message; the others are kept generic on purpose.
ANOMALIE_ACTE_LABELS = {
    "002": "la date de classification de l'acte n'est pas à jour",
}
# AnomalieEnveloppe natures listed by the official schema; labels are demat's reading (unconfirmed).
ANOMALIE_ENVELOPPE_LABELS = {
    "001": "enveloppe non conforme",
    "002": "émetteur non reconnu ou non habilité",
    "003": "fichier annoncé absent ou en trop dans l'archive",
    "004": "archive ou nom de fichier non conforme",
    "005": "taille maximale de l'archive dépassée",
    "100": "autre anomalie",
}
_TYPO_PREFIX = re.compile(r"^([0-9]{2}_[A-Z0-9]{2})-")


def _fr(d: date | None) -> str:
    return d.strftime("%d/%m/%Y") if d else "(date inconnue)"


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value.strip()) if value and value.strip() else None
    except ValueError:
        return None


def anomaly_label(kind: str, nature: str) -> str:
    table = ANOMALIE_ENVELOPPE_LABELS if kind == "AnomalieEnveloppe" else ANOMALIE_ACTE_LABELS
    return table.get(nature, f"anomalie de nature {nature} (code non documenté)")


def metadata_from_donnees(el) -> tuple[ActeMetadata, list[str]]:
    """DonneesActe (Acte or ActeRecu) -> metadata and file names (acte first, then annexes)."""
    codes = []
    for i in range(1, 6):
        c = X.child(el, f"CodeMatiere{i}")
        if c is not None:
            if len(codes) != i - 1:
                break  # a skipped level (allowed by the schema): keep the levels up to the gap
            codes.append(X.attr(c, "CodeMatiere").strip())
    code_text = X.attr(el, "CodeNatureActe").strip()
    nature = NATURE_BY_CODE.get(int(code_text), code_text) if code_text.isdigit() else code_text
    doc_name = X.text(X.child(el, "Document"), "NomFichier")
    annexes_el = X.child(el, "Annexes")
    annex_names = [X.text(a, "NomFichier") for a in annexes_el.iterfind(X.q("Annexe"))] if annexes_el is not None else []
    prec = X.child(el, "PrecedentIdentifiantActe")

    def typo(name: str) -> str:
        m = _TYPO_PREFIX.match(name)
        return m.group(1) if m else ""

    papier = X.child(el, "DocumentPapier")
    md = ActeMetadata(
        nature=nature,
        matiere=".".join(codes),
        numero_interne=X.attr(el, "NumeroInterne"),
        objet=(X.child(el, "Objet").text or "") if X.child(el, "Objet") is not None else "",
        date_decision=_date(X.attr(el, "Date")) or date.min,
        typologie=typo(doc_name),
        classification_date=_date(X.text(el, "ClassificationDateVersion")),
        annexes_typologies=tuple(typo(n) for n in annex_names),
        precedent_idacte=X.attr(prec, "IDActe") or None if prec is not None else None,
        document_papier=(papier is not None and (papier.text or "").strip().upper() == "O"),
    )
    return md, [doc_name, *annex_names]


def _names(el, path: str) -> list[str]:
    return [(n.text or "").strip() for n in el.iterfind(path, namespaces={"a": NS_ACTES})]


def parse_message(data: bytes, name: str = "") -> ActesMessage:
    """Read any @ctes message. `name` (the file name) helps find the IDActe of an AnomalieActe."""
    try:
        root = X.parse(data)
    except xmlsafe.UnsafeXML as exc:
        raise MessageError(str(exc)) from exc
    except etree.XMLSyntaxError as exc:
        raise MessageError(f"XML illisible : {error_fr(exc)}") from exc
    qn = etree.QName(root)
    if qn.namespace != NS_ACTES:
        raise MessageError(f"ce document n'est pas un message @ctes (élément racine « {qn.localname} », "
                           f"espace de noms « {qn.namespace or 'aucun'} »)")
    kind = qn.localname
    if kind not in MESSAGE_CODES and kind not in ENVELOPE_KINDS and kind != "AnomalieEnveloppe":
        raise MessageError(f"type de message @ctes inconnu : « {kind} »")
    msg = ActesMessage(kind=kind, code=MESSAGE_CODES.get(kind, ""), name=name, data=data)
    msg.schema_errors = X.schema_errors(root)
    from_name = naming.parse_file_name(name) if name else None
    msg.idacte = X.attr(root, "IDActe")

    if kind in ("Acte", "ARActe", "AnomalieActe"):
        donnees = root if kind == "Acte" else X.child(root, "ActeRecu")
        if donnees is not None:
            msg.acte, msg.acte_documents = metadata_from_donnees(donnees)
        msg.classification_date = _date(X.text(root, "ClassificationDateVersionEnCours"))
        if kind == "ARActe":
            msg.date = _date(X.attr(root, "DateReception"))
        elif kind == "AnomalieActe":
            msg.date = _date(X.text(root, "Date"))
        else:
            msg.date = msg.acte.date_decision if msg.acte else None
            msg.classification_date = msg.acte.classification_date if msg.acte else None
        msg.documents = list(msg.acte_documents)
    if kind in ("AnomalieActe", "AnomalieEnveloppe"):
        msg.nature = X.text(root, "Nature")
        msg.nature_label = anomaly_label(kind, msg.nature)
        msg.detail = X.text(root, "Detail")
        if kind == "AnomalieEnveloppe":
            msg.date = _date(X.text(root, "Date"))
            _read_cl_envelope(X.child(root, "EnveloppeRecue"), msg)
            if msg.nature not in ANOMALIE_ENVELOPPE_LABELS:
                # the ministère sends codes the official schema does not list: keep the answer, say so
                msg.extra.setdefault("avertissements", []).append(
                    f"nature d'anomalie « {msg.nature or '(vide)'} » absente de la liste du schéma officiel @ctes"
                    f" ({', '.join(ANOMALIE_ENVELOPPE_LABELS)}) : le refus est pris en compte tel quel,"
                    " son motif exact est à lire dans le détail ou à demander à la préfecture"
                )
    if "DateCourrierPref" in {etree.QName(a).localname for a in root.attrib}:
        msg.date_courrier_pref = _date(X.attr(root, "DateCourrierPref"))
        msg.date = msg.date_courrier_pref
    if kind in ("CourrierSimple", "ReponseCourrierSimple", "RefusPieceComplementaire", "RejetLettreObservations",
                "ReponseLettreObservations", "DemandePieceComplementaire", "LettreObservations"):
        msg.documents = _names(root, "a:Document/a:NomFichier")
    if kind == "DemandePieceComplementaire":
        msg.detail = X.text(root, "DescriptionPieces")
    elif kind == "LettreObservations":
        msg.detail = X.text(root, "Motif")
    elif kind == "PieceComplementaire":
        msg.documents = _names(root, "a:Documents/a:Document/a:NomFichier")
    elif kind in ("ARPieceComplementaire", "ARReponseRejetLettreObservations"):
        infos = X.child(root, "InfosCourrierPref")
        msg.idacte = X.attr(infos, "IDActe")
        msg.date_courrier_pref = _date(X.attr(infos, "DateCourrierPref"))
        msg.date = _date(X.attr(root, "DateReception"))
    elif kind == "DefereTA":
        msg.date = _date(X.text(root, "DateDepot"))
        msg.detail = X.text(root, "NatureIllegalite")
        msg.documents = _names(root, "a:PiecesJointes/a:PieceJointe/a:NomFichier")
    elif kind == "ARAnnulation":
        msg.date = _date(X.attr(root, "DateReception"))
    elif kind in ("DemandeClassification", "ReponseClassificationSansChangement", "RetourClassification"):
        msg.date = _date(X.text(root, "DateClassification"))
        msg.classification_date = msg.date
        if kind == "RetourClassification":
            from flows.actes.classification import parse_retour_classification

            msg.extra["classification"] = parse_retour_classification(data)
    elif kind == "EnveloppeMISILLCL":
        emetteur = X.child(root, "Emetteur")
        for tag in ("IDSousPref", "IDPref", "IDSGAR"):
            e = X.child(emetteur, tag)
            if e is not None:
                msg.extra["emetteur"] = tag
                msg.departement = X.attr(e, "Departement")
                msg.arrondissement = X.attr(e, "Arrondissement")
        msg.siren = (X.child(root, "Destinataire").get(X.qi("SIREN"), "")
                     if X.child(root, "Destinataire") is not None else "")
        msg.documents = _names(root, "a:FormulairesEnvoyes/a:Formulaire/a:NomFichier")
        ref = X.child(emetteur, "Referent")
        if ref is not None:
            msg.extra["referent"] = {k: X.text(ref, k) for k in ("Nom", "Telephone", "Email")}
    elif kind == "EnveloppeCLMISILL":
        _read_cl_envelope(root, msg)

    if not msg.idacte and from_name and from_name["idacte"]:
        msg.idacte, msg.extra["idacte_source"] = from_name["idacte"], "nom du fichier"
    if not msg.idacte:
        # AnomalieActe carries no IDActe: the transmitted files are named after it (…-IDACTE-1-1_n.pdf),
        # and an AnomalieEnveloppe names the messages of the refused envelope
        names = msg.acte_documents if msg.acte else msg.extra.get("formulaires_recus", [])
        found = [p["idacte"] for p in (naming.parse_file_name(n) for n in names) if p and p["idacte"]]
        if found:
            msg.idacte, msg.extra["idacte_source"] = found[0], "noms des fichiers transmis"
            if kind == "AnomalieEnveloppe":
                msg.extra["idactes"] = list(dict.fromkeys(found))
    if not msg.idacte and msg.acte and from_name and msg.acte.nature in NATURE_BY_CODE.values():
        # last resort: département and SIREN from the file name, date and number from the acte
        try:
            msg.idacte = naming.make_idacte(from_name["departement"], from_name["siren"], msg.acte.date_decision,
                                            msg.acte.numero_interne, msg.acte.nature)
            msg.extra["idacte_source"] = "reconstruit (nom du fichier et acte)"
        except ValueError:
            pass
    if from_name and not msg.siren:
        msg.siren = from_name["siren"]
        msg.departement = msg.departement or from_name["departement"]
    msg.summary_fr = summarize(msg)
    return msg


def _read_cl_envelope(el, msg: ActesMessage) -> None:
    if el is None:
        return
    idcl = X.child(X.child(el, "Emetteur"), "IDCL")
    if idcl is not None:
        msg.siren = idcl.get(X.qi("SIREN"), "")
        msg.departement = X.attr(idcl, "Departement")
        msg.arrondissement = X.attr(idcl, "Arrondissement")
        msg.extra["nature_collectivite"] = X.attr(idcl, "Nature")
    msg.emails = _names(el, "a:AdressesRetour/a:Email")
    if msg.kind == "EnveloppeCLMISILL":
        msg.documents = _names(el, "a:FormulairesEnvoyes/a:Formulaire/a:NomFichier")
    else:
        msg.extra["formulaires_recus"] = _names(el, "a:FormulairesEnvoyes/a:Formulaire/a:NomFichier")


def summarize(m: ActesMessage) -> str:
    """What the préfecture (or the platform) said, and what the agent must do, in French."""
    acte = f"l'acte {m.idacte}" if m.idacte else "l'acte"
    if m.acte and m.acte.objet:
        acte += f" (« {m.acte.objet[:80]} »)"
    docs = f" Document(s) joint(s) : {', '.join(m.documents)}." if m.documents else ""
    k = m.kind
    if k == "ARActe":
        text = (f"La préfecture a accusé réception de {acte} le {_fr(m.date)} : la transmission au contrôle de "
                "légalité est faite, l'acte est exécutoire dès sa publication ou sa notification. Rien à faire.")
        if m.acte and m.classification_date and m.acte.classification_date != m.classification_date:
            text += (f" Attention : la classification de la préfecture a changé (version du {_fr(m.classification_date)}) ; "
                     "demandez la nouvelle classification avant le prochain envoi.")
        return text
    if k == "AnomalieActe":
        what = f"l'acte n° {m.acte.numero_interne} du {_fr(m.acte.date_decision)}" if m.acte else acte
        text = (f"La préfecture a REFUSÉ la transmission de {what} le {_fr(m.date)} "
                f"(anomalie {m.nature} : {m.nature_label}).")
        if m.detail:
            text += f" Détail : « {m.detail} »."
        if m.nature == "002":
            text += (f" À faire : mettre à jour la classification (version en vigueur du {_fr(m.classification_date)}) "
                     "puis transmettre de nouveau l'acte avec cette date de classification.")
        else:
            text += " À faire : corriger l'acte selon le détail ci-dessus puis le transmettre de nouveau."
        return text + " L'acte n'est PAS transmis au contrôle de légalité."
    if k == "AnomalieEnveloppe":
        text = (f"Le ministère a REFUSÉ une enveloppe de la collectivité le {_fr(m.date)} "
                f"(anomalie {m.nature} : {m.nature_label}).")
        if m.detail:
            text += f" Détail : « {m.detail} »."
        return text + (" Aucun message de cette enveloppe n'est transmis. À faire : corriger puis retransmettre ; "
                       "si l'anomalie persiste, prévenir l'administrateur de la plateforme.")
    if k == "CourrierSimple":
        return (f"La préfecture a envoyé un courrier simple au sujet de {acte} le {_fr(m.date)}.{docs} "
                "À faire : lire le courrier ; une réponse (2-2) est possible si nécessaire.")
    if k == "DemandePieceComplementaire":
        return (f"La préfecture demande des pièces complémentaires pour {acte} (courrier du {_fr(m.date)}) : "
                f"« {m.detail} ».{docs} Le délai du contrôle de légalité est suspendu jusqu'à la réponse. "
                "À faire : envoyer les pièces demandées (3-4) ou refuser explicitement (3-3).")
    if k == "LettreObservations":
        return (f"La préfecture a envoyé une lettre d'observations sur {acte} le {_fr(m.date)} : « {m.detail} ».{docs} "
                "Le préfet estime l'acte irrégulier. À faire : répondre (4-4) ou refuser explicitement de répondre (4-3), "
                "en général en retirant ou modifiant l'acte ; sinon un déféré au tribunal administratif est possible.")
    if k == "DefereTA":
        return (f"Le préfet a déféré {acte} au tribunal administratif le {_fr(m.date)} (motif : « {m.detail} »).{docs} "
                "À faire : prévenir immédiatement l'élu et le service juridique ; l'acte reste exécutoire sauf suspension "
                "par le juge.")
    if k == "ARAnnulation":
        return f"La préfecture a pris en compte l'annulation de la transmission de {acte} le {_fr(m.date)}. Rien à faire."
    if k in ("ARPieceComplementaire", "ARReponseRejetLettreObservations"):
        what = "vos pièces complémentaires (ou votre refus)" if k == "ARPieceComplementaire" else \
            "votre réponse (ou votre refus de répondre) à la lettre d'observations"
        return (f"La préfecture a accusé réception le {_fr(m.date)} de {what} pour {acte} "
                f"(courrier du {_fr(m.date_courrier_pref)}). Rien à faire.")
    if k == "RetourClassification":
        c = m.extra.get("classification")
        n_nat, n_mat = (len(c.natures), len(c.matieres)) if c else (0, 0)
        return (f"La préfecture a transmis sa classification du {_fr(m.date)} ({n_nat} natures, {n_mat} matières et "
                "sous-matières). Elle sert désormais à vérifier et transmettre les actes. Rien à faire.")
    if k == "ReponseClassificationSansChangement":
        return f"La classification utilisée (version du {_fr(m.date)}) est à jour. Rien à faire."
    if k == "EnveloppeMISILLCL":
        return (f"Enveloppe du ministère pour la collectivité SIREN {m.siren} : {len(m.documents)} message(s) "
                f"({', '.join(m.documents)}).")
    if k == "EnveloppeCLMISILL":
        return (f"Enveloppe de la collectivité SIREN {m.siren} vers le ministère : {len(m.documents)} message(s) "
                f"({', '.join(m.documents)}).")
    return f"Message envoyé par la collectivité : {m.label_fr} ({m.code}) pour {acte}."


# ----------------------------------------------------------------------------------------------
# Archives from the ministère


def read_archive(data: bytes, name: str = "", *, max_total_bytes: int = DEFAULT_MAX_TOTAL) -> ActesArchive:
    """Open a tar.gz from the ministère in memory (refusing hostile archives) and read its messages.

    The envelope lists the XML messages; every other member is a document (PDF, XML budget...).
    """
    members = read_tar(data, max_total_bytes=max_total_bytes)
    archive = ActesArchive(name=name, envelope_name="", envelope=None, members=list(members))
    parsed: dict[str, ActesMessage] = {}
    for member, content in members.items():
        if not member.lower().endswith(".xml"):
            continue
        try:
            parsed[member] = parse_message(content, member.rsplit("/", 1)[-1])
        except MessageError:
            continue  # an XML document that is not a message (budget, annex)
    for member, msg in parsed.items():
        if msg.kind in ENVELOPE_KINDS:
            archive.envelope_name, archive.envelope = member, msg
            break
    chosen: list[str] = []
    if archive.envelope is not None:
        listed = archive.envelope.documents
        by_base = {m.rsplit("/", 1)[-1]: m for m in members}
        for fname in listed:
            member = by_base.get(fname)
            if member is None:
                archive.problems.append(f"le message « {fname} » annoncé par l'enveloppe est absent de l'archive")
            elif member in parsed:
                chosen.append(member)
            else:
                archive.problems.append(f"« {fname} » annoncé par l'enveloppe n'est pas un message @ctes lisible")
    else:
        archive.problems.append("aucune enveloppe (EnveloppeMISILLCL ou EnveloppeCLMISILL) dans l'archive")
        chosen = [k for k, v in parsed.items() if v.kind not in ENVELOPE_KINDS]
    env = archive.envelope
    for member in chosen:
        msg = parsed[member]
        if env is not None and msg.kind == "AnomalieActe" and not msg.idacte and msg.acte and env.siren:
            try:  # département and SIREN from the envelope
                msg.idacte = naming.make_idacte(env.departement, env.siren, msg.acte.date_decision,
                                                msg.acte.numero_interne, msg.acte.nature)
                msg.extra["idacte_source"] = "reconstruit (enveloppe et acte)"
                msg.summary_fr = summarize(msg)
            except ValueError:
                pass
        archive.messages.append(msg)
    for member, content in members.items():
        if member != archive.envelope_name and member not in chosen:
            archive.documents[member] = content
    referenced = {d for msg in archive.messages for d in msg.documents}
    doc_bases = {m.rsplit("/", 1)[-1] for m in archive.documents}
    for msg in archive.messages:
        if msg.kind in ("ARActe", "AnomalieActe"):
            continue  # they echo the acte's file names, which are not sent back
        for d in msg.documents:
            if d not in doc_bases:
                archive.problems.append(f"le document « {d} » cité par « {msg.name} » est absent de l'archive")
    for d in sorted(doc_bases - referenced):
        # the State's archive may carry a logo, an HTML body...: it comes from the ministère, so it
        # is kept (archive.documents) and read, and the agent is told
        member = next(m for m in archive.documents if m.rsplit("/", 1)[-1] == d)
        content = archive.documents[member]
        archive.notes.append(
            f"le fichier « {d} » ({describe_document(content)}, {len(content)} octets) n'est cité par aucun message :"
            " conservé avec la réponse de la préfecture"
        )
    return archive


def describe_document(content: bytes) -> str:
    """What a document is, from its first bytes (French): for notes about files no message cites."""
    head = content[:512].lstrip()
    low = head.lower()
    if head.startswith(b"%PDF-"):
        return "document PDF"
    if head.startswith(b"\x89PNG"):
        return "image PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "image JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image GIF"
    if low.startswith(b"<!doctype html") or b"<html" in low:
        return "page HTML"
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "document XML"
    try:
        content[:4096].decode("utf-8")
        return "texte"
    except UnicodeDecodeError:
        return "fichier binaire"


# ----------------------------------------------------------------------------------------------
# Builders for the préfecture simulator


@dataclass
class PrefMessage:
    """A message built by the préfecture simulator, with its file name and attached documents."""

    kind: str
    name: str
    xml: bytes = field(repr=False)
    documents: dict[str, bytes] = field(default_factory=dict, repr=False)
    idacte: str = ""

    @property
    def code(self) -> str:
        return MESSAGE_CODES.get(self.kind, "")


def _acte_recu(parent, idacte: str, acte_message: bytes | None, tag: str = "ActeRecu") -> None:
    """Copy the received Acte into ActeRecu; without it, a minimal one rebuilt from the IDActe."""
    el = X.sub(parent, tag)
    if acte_message is not None:
        src = X.parse(acte_message)
        if X.local(src) != "Acte":
            raise ValueError(f"le message fourni n'est pas un Acte mais « {X.local(src)} »")
        for k, v in src.attrib.items():
            if etree.QName(k).namespace == NS_ACTES:
                el.set(k, v)
        for c in src:
            if isinstance(c.tag, str):
                el.append(copy.deepcopy(c))
        return
    parts = naming.parse_idacte(idacte)
    from flows.actes.model import NATURES

    d = parts["date"]
    el.set(X.q("Date"), f"{d[:4]}-{d[4:6]}-{d[6:]}")
    el.set(X.q("NumeroInterne"), parts["numero"])
    el.set(X.q("CodeNatureActe"), str(NATURES.get(parts["nature"], (6, ""))[0]))
    X.sub(el, "CodeMatiere1", CodeMatiere="9")
    X.sub(el, "CodeMatiere2", CodeMatiere="1")
    X.sub(el, "Objet", "(acte reçu)")
    X.sub(el, "ClassificationDateVersion", f"{d[:4]}-{d[4:6]}-{d[6:]}")
    X.sub(X.sub(el, "Document"), "NomFichier", naming.document_name(idacte, "1-1", 1, "pdf"))
    X.sub(el, "Annexes", Nombre="0")
    X.sub(el, "DocumentPapier", "N")


def build_aracte(idacte: str, date_reception: date, classification_date: date, *,
                 acte_message: bytes | None = None) -> PrefMessage:
    """1-2 ARActe. Pass the received Acte message so that ActeRecu echoes it exactly."""
    naming.parse_idacte(idacte)
    root = X.root("ARActe", IDActe=idacte, DateReception=date_reception.isoformat())
    _acte_recu(root, idacte, acte_message)
    X.sub(root, "ClassificationDateVersionEnCours", classification_date.isoformat())
    return PrefMessage("ARActe", naming.message_name(idacte, "1-2"), X.to_bytes(root), idacte=idacte)


def build_anomalie_acte(idacte: str, nature: str, detail: str = "", *, acte_message: bytes | None = None,
                        date: date | None = None, classification_date: date | None = None) -> PrefMessage:
    """1-3 AnomalieActe (nature on 3 digits, e.g. "002" classification pas à jour)."""
    naming.parse_idacte(idacte)
    if not re.fullmatch(r"[0-9]{3}", nature):
        raise ValueError(f"nature d'anomalie « {nature} » : trois chiffres attendus")
    day = date or paris_today()
    root = X.root("AnomalieActe")
    X.sub(root, "Date", day.isoformat())
    X.sub(root, "Nature", nature)
    if detail:
        X.sub(root, "Detail", detail)
    _acte_recu(root, idacte, acte_message)
    X.sub(root, "ClassificationDateVersionEnCours", (classification_date or day).isoformat())
    return PrefMessage("AnomalieActe", naming.message_name(idacte, "1-3"), X.to_bytes(root), idacte=idacte)


def build_anomalie_enveloppe(envelope_xml: bytes | None, nature: str, detail: str = "", *, date: date | None = None,
                             envelope_name: str = "") -> PrefMessage:
    """AnomalieEnveloppe echoing the received EnveloppeCLMISILL; named ANO_<envelope name>.

    `envelope_xml` None (archive or envelope unreadable) leaves EnveloppeRecue empty: there is
    nothing to echo, and the collectivité still gets an answer."""
    if not re.fullmatch(r"[0-9]{3}", nature):
        raise ValueError(f"nature d'anomalie « {nature} » : trois chiffres attendus")
    src = X.parse(envelope_xml) if envelope_xml is not None else None
    if src is not None and X.local(src) != "EnveloppeCLMISILL":
        raise ValueError(f"le document fourni n'est pas une EnveloppeCLMISILL mais « {X.local(src)} »")
    root = X.root("AnomalieEnveloppe")
    X.sub(root, "Date", (date or paris_today()).isoformat())
    X.sub(root, "Nature", nature)
    if detail:
        X.sub(root, "Detail", detail)
    recue = X.sub(root, "EnveloppeRecue")
    for c in src if src is not None else ():
        if isinstance(c.tag, str):
            recue.append(copy.deepcopy(c))
    return PrefMessage("AnomalieEnveloppe", f"ANO_{envelope_name or 'EACT.xml'}", X.to_bytes(root))


_COURRIERS = {"CourrierSimple", "DemandePieceComplementaire", "LettreObservations", "DefereTA"}


def build_courrier(kind: str, idacte: str, *, date: date | None = None, document: bytes | None = None,
                   description: str = "", motif: str = "", nature_illegalite: str = "",
                   pieces: Sequence[bytes] = ()) -> PrefMessage:
    """A letter of the préfecture: 2-1 CourrierSimple, 3-1 DemandePieceComplementaire,
    4-1 LettreObservations, 5-1 DefereTA (kind or code). A one-page PDF is generated if none is given."""
    from flows.actes.pdf import minimal_pdf

    kind = KIND_BY_CODE.get(kind, kind)
    if kind not in _COURRIERS:
        raise ValueError(f"« {kind} » n'est pas un courrier de la préfecture (attendu : {sorted(_COURRIERS)})")
    naming.parse_idacte(idacte)
    code = MESSAGE_CODES[kind]
    day = date or paris_today()
    label = {"CourrierSimple": "Courrier simple", "DemandePieceComplementaire": "Demande de pièces complémentaires",
             "LettreObservations": "Lettre d'observations", "DefereTA": "Déféré au tribunal administratif"}[kind]
    pdf = document or minimal_pdf(f"Préfecture - {label}", f"Acte {idacte}", f"Date : {_fr(day)}",
                                  description or motif or nature_illegalite or "")
    docs: dict[str, bytes] = {}
    if kind == "DefereTA":
        root = X.root("DefereTA", IDActe=idacte)
        X.sub(root, "DateDepot", day.isoformat())
        X.sub(root, "NatureIllegalite", nature_illegalite or "Illégalité")
        pj = X.sub(root, "PiecesJointes")
        for i, content in enumerate([pdf, *pieces], 1):
            fname = naming.document_name(idacte, code, i, "pdf")
            docs[fname] = content
            X.sub(X.sub(pj, "PieceJointe"), "NomFichier", fname)
    else:
        root = X.root(kind, IDActe=idacte, DateCourrierPref=day.isoformat())
        if kind == "DemandePieceComplementaire":
            X.sub(root, "DescriptionPieces", description or "Pièces complémentaires demandées")
        elif kind == "LettreObservations":
            X.sub(root, "Motif", motif or "Observations")
        fname = naming.document_name(idacte, code, 1, "pdf")
        docs[fname] = pdf
        X.sub(X.sub(root, "Document"), "NomFichier", fname)
    return PrefMessage(kind, naming.message_name(idacte, code), X.to_bytes(root), docs, idacte=idacte)


def build_ar_for(kind: str, idacte: str, date_courrier_pref: date | None = None, *,
                 date_reception: date | None = None) -> PrefMessage:
    """The préfecture's acknowledgment of an answer: 3-3/3-4 -> 3-5 ARPieceComplementaire,
    4-3/4-4 -> 4-5 ARReponseRejetLettreObservations, 6-1 -> 6-2 ARAnnulation."""
    kind = KIND_BY_CODE.get(kind, kind)
    naming.parse_idacte(idacte)
    day = date_reception or paris_today()
    if kind == "Annulation":
        root = X.root("ARAnnulation", IDActe=idacte, DateReception=day.isoformat())
        return PrefMessage("ARAnnulation", naming.message_name(idacte, "6-2"), X.to_bytes(root), idacte=idacte)
    target = {"RefusPieceComplementaire": "ARPieceComplementaire", "PieceComplementaire": "ARPieceComplementaire",
              "RejetLettreObservations": "ARReponseRejetLettreObservations",
              "ReponseLettreObservations": "ARReponseRejetLettreObservations"}.get(kind)
    if target is None:
        raise ValueError(f"pas d'accusé de réception de la préfecture pour « {kind} »")
    if date_courrier_pref is None:
        raise ValueError("la date du courrier de la préfecture (DateCourrierPref) est requise")
    root = X.root(target, DateReception=day.isoformat())
    X.sub(root, "InfosCourrierPref", IDActe=idacte, DateCourrierPref=date_courrier_pref.isoformat())
    return PrefMessage(target, naming.message_name(idacte, MESSAGE_CODES[target]), X.to_bytes(root), idacte=idacte)


def build_ar_annulation(idacte: str, date_reception: date) -> PrefMessage:
    return build_ar_for("Annulation", idacte, date_reception=date_reception)


def build_envelope_misillcl(siren: str, departement: str, arrondissement: int | str | None,
                            formulaires: Iterable[str]) -> bytes:
    root = X.root("EnveloppeMISILLCL")
    emetteur = X.sub(root, "Emetteur")
    if arrondissement is None:
        X.sub(emetteur, "IDPref", Departement=departement)
    else:
        X.sub(emetteur, "IDSousPref", Departement=departement, Arrondissement=str(arrondissement))
    form = X.sub(root, "FormulairesEnvoyes")
    for n in formulaires:
        X.sub(X.sub(form, "Formulaire"), "NomFichier", n)
    X.sub(root, "Destinataire").set(X.qi("SIREN"), siren)
    return X.to_bytes(root)


def build_response_archive(messages: Sequence[PrefMessage | tuple[str, bytes]], serial: int, siren: str,
                           departement: str, *, arrondissement: int = 1, day: date | None = None,
                           prefix: str = "EACT") -> tuple[str, bytes]:
    """What the ministère deposits for a collectivité: EnveloppeMISILLCL + messages + documents, as
    <prefix>--SPREF<dpt><arr>-<SIREN>-<AAAAMMJJ>-<serial>.tar.gz."""
    day = day or paris_today()
    env_name = naming.pref_envelope_name(departement, arrondissement, siren, day, serial, prefix)
    members: list[tuple[str, bytes]] = []
    names = []
    for m in messages:
        if isinstance(m, PrefMessage):
            names.append(m.name)
            members.append((m.name, m.xml))
            members.extend(m.documents.items())
        else:
            names.append(m[0])
            members.append(m)
    env = build_envelope_misillcl(siren, departement, arrondissement, names)
    return env_name.removesuffix(".xml") + ".tar.gz", make_tar_gz([(env_name, env), *members], day)
