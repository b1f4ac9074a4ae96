"""SEDA replies from the archive system: Acknowledgement and ArchiveTransferReply (2.1 / 2.2 / 2.3).

Matching a reply to our transfer: an Acknowledgement names our MessageIdentifier in
MessageReceivedIdentifier, an ArchiveTransferReply in MessageRequestIdentifier. Some archive
systems swap the reply's two identifiers (the Pastell fake SAE sample puts our identifier in
MessageIdentifier and its own in MessageRequestIdentifier), so `matches` accepts both.

`archive_id` (the archival agency's identifier for what it took in), in this order:
1. the first ArchivalAgencyArchiveUnitIdentifier of the reply's top archive unit (the archive's
   own cote, e.g. "AE_2022_15"), when the reply carries a DataObjectPackage;
2. otherwise the reply's identifier: MessageIdentifier, or MessageRequestIdentifier when the
   identifiers are swapped (known only when `our_message_identifier` is given to parse_reply).
An Acknowledgement never carries an archive_id (None).

Accepted only when ReplyCode is "000" or "OK"; anything else, WARNING included, is a refusal to
surface to an agent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from flows import xmlsafe
from flows.archive.schemas import check_version, seda_namespace, version_of_namespace
from flows.findings import UnreadableFile

ACCEPTED_CODES = frozenset({"000", "OK"})

# Exact codes: the Vitam statuses and our simulator's codes (see flows.archive.check.reply_code_for).
REPLY_CODES_FR: dict[str, str] = {
    "000": "Transfert accepté : le service d'archives a pris en charge les archives.",
    "OK": "Transfert accepté : le service d'archives a pris en charge les archives.",
    "WARNING": (
        "Le service d'archives signale des avertissements : le transfert n'est pas considéré comme accepté, "
        "examinez le détail avec le service d'archives avant de le relancer."
    ),
    "KO": "Transfert refusé par le service d'archives.",
    "FATAL": "Erreur technique du service d'archives : le transfert n'a pas été traité, il faudra le renvoyer.",
}
# Families of numeric codes (first digit), after the MEDONA/SEDA reply code list.
REPLY_FAMILIES_FR: dict[str, str] = {
    "0": "Code de réussite non standard : le transfert n'est pas considéré comme accepté.",
    "1": "Transfert refusé : le message (bordereau SEDA) est mal formé ou non conforme au schéma.",
    "2": (
        "Transfert refusé : problème sur les fichiers du paquet (fichier absent ou en trop, empreinte, "
        "taille ou format non conforme, noms en double)."
    ),
    "3": (
        "Transfert refusé : accord de versement, profil d'archivage ou service versant/producteur "
        "inconnu ou non autorisé."
    ),
    "4": "Transfert refusé sur le fond par le service d'archives.",
}


def explain_code(code: str | None) -> str:
    if not code:
        return "Réponse sans code (ReplyCode absent) : le transfert n'est pas considéré comme accepté."
    c = code.strip().upper()
    if c in REPLY_CODES_FR:
        return REPLY_CODES_FR[c]
    if c.isdigit() and c[:1] in REPLY_FAMILIES_FR:
        return f"Code {c} : {REPLY_FAMILIES_FR[c[:1]]}"
    return f"Code de réponse « {code} » inconnu : le transfert est considéré comme refusé."


@dataclass
class SaeReply:
    kind: str  # "acknowledgement" | "transfer_reply"
    version: str
    message_identifier: str
    date: str
    message_received_identifier: str | None = None  # Acknowledgement
    message_request_identifier: str | None = None  # ArchiveTransferReply
    reply_code: str | None = None
    accepted: bool = False
    archive_id: str | None = None
    reason_fr: str = ""
    comments: list[str] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    grant_date: str | None = None
    archival_agency: str | None = None
    transferring_agency: str | None = None
    sender: str | None = None
    receiver: str | None = None
    swapped: bool | None = None  # known when parse_reply got our_message_identifier

    @property
    def final(self) -> bool:
        """True for the ArchiveTransferReply (the decision); an Acknowledgement only says 'received'."""
        return self.kind == "transfer_reply"

    @property
    def refers_to(self) -> str | None:
        """The identifier this reply says it answers (before any swap correction)."""
        return self.message_received_identifier if self.kind == "acknowledgement" else self.message_request_identifier


def matches(reply: SaeReply, our_message_identifier: str) -> bool:
    """Does this reply answer our transfer? Both ways: some systems swap the identifiers."""
    ours = (our_message_identifier or "").strip()
    if not ours:
        return False
    candidates = {reply.message_identifier, reply.message_received_identifier, reply.message_request_identifier}
    return ours in candidates


def _t(el: etree._Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    return " ".join(el.text.split()) or None


def parse_reply(data: bytes, *, our_message_identifier: str | None = None) -> SaeReply:
    """Read an Acknowledgement or ArchiveTransferReply of SEDA 2.1, 2.2 or 2.3."""
    try:
        root = xmlsafe.parse_bytes(data, max_bytes=50 * 1024 * 1024)
    except (xmlsafe.UnsafeXML, etree.XMLSyntaxError) as exc:
        raise UnreadableFile(f"Réponse du SAE illisible (XML) : {exc}") from exc
    q = etree.QName(root)
    version = version_of_namespace(q.namespace)
    if version is None:
        raise UnreadableFile(
            f"Réponse du SAE dans un espace de noms inconnu « {q.namespace or '(aucun)'} » "
            "(attendu : SEDA 2.1, 2.2 ou 2.3)."
        )
    ns = {"s": q.namespace}

    def find(path: str, base: etree._Element = root) -> str | None:
        return _t(base.find(path, ns))

    comments = [" ".join((c.text or "").split()) for c in root.findall("s:Comment", ns) if (c.text or "").strip()]
    msg_id = find("s:MessageIdentifier") or ""

    def swapped(answered: str | None) -> bool | None:
        """Our identifier stands in the reply's own MessageIdentifier instead of the answered one."""
        if not our_message_identifier:
            return None
        return answered != our_message_identifier and msg_id == our_message_identifier

    common = {"version": version, "message_identifier": msg_id, "date": find("s:Date") or "", "comments": comments}
    if q.localname == "Acknowledgement":
        received = find("s:MessageReceivedIdentifier")
        reason = "Accusé de réception : le service d'archives a reçu le transfert ; sa décision suivra."
        if comments:
            reason += " Commentaire : " + " ; ".join(comments)
        return SaeReply(
            kind="acknowledgement",
            message_received_identifier=received,
            accepted=False,
            reason_fr=reason,
            sender=find("s:Sender/s:Identifier"),
            receiver=find("s:Receiver/s:Identifier"),
            swapped=swapped(received),
            **common,
        )
    if q.localname != "ArchiveTransferReply":
        raise UnreadableFile(
            f"Message SEDA « {q.localname} » inattendu : seuls Acknowledgement et ArchiveTransferReply sont lus ici."
        )
    code = find("s:ReplyCode")
    request_id = find("s:MessageRequestIdentifier")
    accepted = (code or "").strip().upper() in ACCEPTED_CODES
    events: list[dict[str, str]] = []
    for ev in root.findall("s:Operation/s:Event", ns):
        item = {
            k: v
            for k in ("EventIdentifier", "EventTypeCode", "EventType", "EventDateTime", "EventDetail", "Outcome",
                      "OutcomeDetail", "OutcomeDetailMessage", "EventDetailData")
            if (v := find(f"s:{k}", ev))
        }
        if item:
            events.append(item)
    request_swapped = swapped(request_id)
    archive_id = find("s:DataObjectPackage/s:DescriptiveMetadata/s:ArchiveUnit/s:Content/s:ArchivalAgencyArchiveUnitIdentifier")
    if archive_id is None and accepted:
        archive_id = request_id if request_swapped else (msg_id or None)
    parts = [explain_code(code)]
    if comments:
        parts.append("Commentaire du service d'archives : " + " ; ".join(comments))
    for ev in events:
        detail = " — ".join(
            v for k in ("EventType", "EventDetail", "Outcome", "OutcomeDetail", "OutcomeDetailMessage") if (v := ev.get(k))
        )
        if detail:
            parts.append("Détail : " + detail)
    return SaeReply(
        kind="transfer_reply",
        message_request_identifier=request_id,
        reply_code=code,
        accepted=accepted,
        archive_id=archive_id,
        reason_fr=" ".join(parts),
        events=events,
        grant_date=find("s:GrantDate"),
        archival_agency=find("s:ArchivalAgency/s:Identifier"),
        transferring_agency=find("s:TransferringAgency/s:Identifier"),
        swapped=request_swapped,
        **common,
    )


# --- builders for the SAE simulator -------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Builder:
    def __init__(self, version: str, root: str):
        self.ns = seda_namespace(check_version(version))
        self.root = etree.Element(f"{{{self.ns}}}{root}", nsmap={None: self.ns})

    def el(self, parent: etree._Element | None, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        e = etree.SubElement(self.root if parent is None else parent, f"{{{self.ns}}}{tag}")
        for k, v in attrs.items():
            e.set(k, v)
        if text is not None:
            e.text = text
        return e

    def bytes(self) -> bytes:
        return etree.tostring(self.root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build_acknowledgement(
    received_id: str,
    version: str = "2.2",
    *,
    message_identifier: str | None = None,
    sender: str = "SAE-DEMO",
    receiver: str = "DEMAT",
    date: str | None = None,
    comment: str | None = None,
) -> bytes:
    """An Acknowledgement of our transfer `received_id`, as the archive system sends it."""
    b = _Builder(version, "Acknowledgement")
    if comment:
        b.el(None, "Comment", comment)
    b.el(None, "Date", date or _now())
    b.el(None, "MessageIdentifier", message_identifier or f"{sender}-ACK-{_short(received_id)}")
    b.el(None, "MessageReceivedIdentifier", received_id)
    b.el(b.el(None, "Sender"), "Identifier", sender)
    b.el(b.el(None, "Receiver"), "Identifier", receiver)
    return b.bytes()


def build_transfer_reply(
    request_id: str,
    code: str,
    archive_id: str | None = None,
    comment: str | None = None,
    version: str = "2.2",
    *,
    message_identifier: str | None = None,
    archival_agency: str = "SAE-DEMO",
    transferring_agency: str = "DEMAT",
    date: str | None = None,
    events: list[dict[str, str]] | tuple = (),
    title: str | None = None,
    swap_identifiers: bool = False,
) -> bytes:
    """An ArchiveTransferReply to our transfer `request_id` with ReplyCode `code`.

    `archive_id` goes into ArchivalAgencyArchiveUnitIdentifier of a minimal DataObjectPackage.
    `events` ({EventType, EventDetail, Outcome, OutcomeDetail, OutcomeDetailMessage}) go into
    Operation, the usual place for the reasons of a refusal. `swap_identifiers` reproduces the
    systems that put our identifier in MessageIdentifier.
    """
    b = _Builder(version, "ArchiveTransferReply")
    when = date or _now()
    own_id = message_identifier or f"{archival_agency}-ATR-{_short(request_id + code)}"
    if comment:
        b.el(None, "Comment", comment)
    b.el(None, "Date", when)
    b.el(None, "MessageIdentifier", request_id if swap_identifiers else own_id)
    b.el(None, "CodeListVersions")
    if archive_id:
        pkg = b.el(None, "DataObjectPackage")
        unit = b.el(b.el(pkg, "DescriptiveMetadata"), "ArchiveUnit", id="AU_REPONSE")
        content = b.el(unit, "Content")
        b.el(content, "DescriptionLevel", "RecordGrp")
        b.el(content, "Title", title or f"Transfert {request_id}")
        b.el(content, "ArchivalAgencyArchiveUnitIdentifier", archive_id)
        b.el(pkg, "ManagementMetadata")
    b.el(None, "ReplyCode", code)
    if events:
        op = b.el(None, "Operation")
        for ev in events:
            e = b.el(op, "Event")
            for k in ("EventIdentifier", "EventTypeCode", "EventType"):
                if ev.get(k):
                    b.el(e, k, ev[k])
            b.el(e, "EventDateTime", ev.get("EventDateTime") or when)
            for k in ("EventDetail", "Outcome", "OutcomeDetail", "OutcomeDetailMessage", "EventDetailData"):
                if ev.get(k):
                    b.el(e, k, ev[k])
    b.el(None, "MessageRequestIdentifier", own_id if swap_identifiers else request_id)
    if code.strip().upper() in ACCEPTED_CODES:
        b.el(None, "GrantDate", when)
    b.el(b.el(None, "ArchivalAgency"), "Identifier", archival_agency)
    b.el(b.el(None, "TransferringAgency"), "Identifier", transferring_agency)
    return b.bytes()
