"""The archive system (SAE): SEDA packages in depot/, Acknowledgement then ArchiveTransferReply.

Checks with the SAE's own simulators.sae_checks.check_package (never demat's flows.archive.check). Replies are built by flows.archive.replies builders
when importable (minimal builders here otherwise):
    ACK_<MessageIdentifier>.xml  after `delay`
    ATR_<MessageIdentifier>.xml  after `later_delay`, ReplyCode 000 + archive id "AE_<year>_<n>",
                                 or a refusal code with the reasons as Operation/Event.
Settings.extra: `known_agreements` (list of ArchivalAgreement identifiers; absent = any accepted).
Refusal codes when flows.archive.check does not give one: 100 malformed message, 200 package
files, 300 unknown agreement, 400 simulated refusal (families of REPLY_FAMILIES_FR).
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from datetime import UTC, datetime

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding
from simulators.counterparts import Decision, Incoming, Reply

SEDA_NS = re.compile(r"^fr:gouv:culture:archivesdefrance:seda:v(2\.[0-9])$")
MAX_MANIFEST = 50 * 1024 * 1024


def _members(data: bytes) -> dict[str, bytes] | None:
    """Names -> bytes for manifest.xml; other members' names only (content not needed here)."""
    out: dict[str, bytes] = {}
    try:
        if data[:2] == b"\x1f\x8b":
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for info in tar:
                    if info.isfile():
                        name = info.name.removeprefix("./")
                        fh = tar.extractfile(info) if name == "manifest.xml" and info.size < MAX_MANIFEST else None
                        out[name] = fh.read() if fh else b""
            return out
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        small = info.filename == "manifest.xml" and info.file_size < MAX_MANIFEST
                        out[info.filename] = zf.read(info) if small else b""
            return out
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError):
        return None
    return None


def _find(root: etree._Element, local: str) -> str:
    for el in root.iter():
        if isinstance(el.tag, str) and etree.QName(el).localname == local:
            return (el.text or "").strip()
    return ""


def read_manifest(data: bytes) -> tuple[etree._Element | None, dict[str, bytes] | None, str]:
    members = _members(data)
    if members is None or "manifest.xml" not in members:
        return None, members, ""
    try:
        root = xmlsafe.parse_bytes(members["manifest.xml"])
    except (etree.XMLSyntaxError, ValueError):
        return None, members, ""
    m = SEDA_NS.match(etree.QName(root).namespace or "")
    return root, members, (m.group(1) if m else "")


def structural_findings(root, members, known_agreements: set[str] | None) -> list[Finding]:
    if members is None:
        return [Finding("SEDA-PAQUET", "Paquet illisible : ni tar.gz ni zip valide", layer="lecture")]
    if root is None:
        return [Finding("SEDA-MANIFESTE", "manifest.xml absent ou illisible à la racine du paquet", layer="lecture")]
    found = []
    if etree.QName(root).localname != "ArchiveTransfer":
        found.append(Finding("SEDA-MANIFESTE", f"Racine « {etree.QName(root).localname} » au lieu de ArchiveTransfer"))
    if not _find(root, "MessageIdentifier"):
        found.append(Finding("SEDA-MANIFESTE", "MessageIdentifier absent"))
    agreement = _find(root, "ArchivalAgreement")
    if known_agreements is not None and agreement not in known_agreements:
        found.append(Finding("SEDA-ACCORD", f"Accord de versement « {agreement} » inconnu du service d'archives", value=agreement))
    for el in root.iter():
        if isinstance(el.tag, str) and etree.QName(el).localname == "Uri":
            uri = (el.text or "").strip()
            if uri not in members:
                found.append(Finding("SEDA-FICHIER", f"Fichier « {uri} » annoncé dans le manifeste mais absent du paquet", value=uri))
    return found


def check(data: bytes, known_agreements: set[str] | None) -> list[Finding]:
    from simulators.sae_checks import check_package  # the SAE's own checks, never flows.archive.check

    return [f for f in check_package(data, known_agreements=known_agreements) if f.severity == "error"]


def reply_code(findings: list[Finding]) -> str:
    from simulators.sae_checks import reply_code as own_code

    if findings and all(f.rule.startswith("SAE-") for f in findings):
        return own_code(findings)
    rules = {f.rule for f in findings}
    if any("ACCORD" in r for r in rules):
        return "300"
    if any("FICHIER" in r or "EMPREINTE" in r or "TAILLE" in r for r in rules):
        return "200"
    if "SIMULATION" in rules:
        return "400"
    return "100"


def _safe(identifier: str, fallback: str) -> str:
    token = re.sub(r"[^A-Za-z0-9._-]", "_", identifier)[:80].strip("._")
    return token or fallback


def acknowledgement(received_id: str, version: str) -> bytes:
    try:
        from flows.archive.replies import build_acknowledgement
    except ImportError:
        return _minimal("Acknowledgement", version, [("MessageIdentifier", f"ACK-{received_id}"),
                                                     ("MessageReceivedIdentifier", received_id)])
    return build_acknowledgement(received_id, version)


def transfer_reply(request_id: str, code: str, archive_id: str | None, reason: str, version: str,
                   findings: list[Finding]) -> bytes:
    events = [{"EventType": "Contrôle du transfert", "Outcome": "KO", "OutcomeDetail": f.rule,
               "OutcomeDetailMessage": f.message} for f in findings[:20]]
    try:
        from flows.archive.replies import build_transfer_reply
    except ImportError:
        fields = [("MessageIdentifier", f"ATR-{request_id}"), ("ReplyCode", code), ("MessageRequestIdentifier", request_id)]
        if archive_id:
            fields.append(("ArchivalAgencyArchiveUnitIdentifier", archive_id))
        return _minimal("ArchiveTransferReply", version, fields, comment=reason)
    return build_transfer_reply(request_id, code, archive_id, reason or None, version, events=events)


def _minimal(root_name: str, version: str, fields: list[tuple[str, str]], comment: str = "") -> bytes:
    ns = f"fr:gouv:culture:archivesdefrance:seda:v{version}"
    root = etree.Element(f"{{{ns}}}{root_name}", nsmap={None: ns})
    if comment:
        etree.SubElement(root, f"{{{ns}}}Comment").text = comment
    etree.SubElement(root, f"{{{ns}}}Date").text = datetime.now(UTC).isoformat(timespec="seconds")
    for tag, text in fields:
        etree.SubElement(root, f"{{{ns}}}{tag}").text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def sae_rules(incoming: Incoming) -> Decision:
    settings = incoming.settings
    agreements = settings.extra.get("known_agreements")
    if isinstance(agreements, str):  # from the command line: --set sae.known_agreements=A,B
        agreements = [a.strip() for a in agreements.split(",") if a.strip()]
    known = set(agreements) if agreements is not None else None
    root, _, version = (None, None, "") if incoming.too_large else read_manifest(incoming.data)
    version = version or str(settings.extra.get("seda_version", "2.2"))
    stem = incoming.name.split(".", 1)[0]
    request_id = _find(root, "MessageIdentifier") if root is not None else ""
    request_id = request_id or stem
    if incoming.too_large:
        findings = [Finding("SEDA-TAILLE", "Paquet au-delà de la taille maximale acceptée")]
    else:
        findings = check(incoming.data, known)
    if not findings and incoming.rng.random() < settings.refuse_rate:
        findings = [Finding("SIMULATION", "Refus simulé par le service d'archives (taux de refus configuré)")]
    token = _safe(request_id, _safe(stem, f"paquet-{incoming.reception_id}"))
    replies = [Reply(f"ACK_{token}.xml", acknowledgement(request_id, version), note="Acknowledgement")]
    if findings:
        code = reply_code(findings)
        reason = " ; ".join(f.message for f in findings[:5])
        replies.append(Reply(f"ATR_{token}.xml", transfer_reply(request_id, code, None, reason, version, findings),
                             delay=settings.later_delay, note=f"ArchiveTransferReply {code}"))
        return Decision(replies, f"transfert {request_id} refusé ({code}) : {reason}")
    archive_id = f"AE_{incoming.day.year}_{incoming.reception_id}"
    replies.append(Reply(f"ATR_{token}.xml", transfer_reply(request_id, "000", archive_id, "", version, []),
                         delay=settings.later_delay, note="ArchiveTransferReply 000"))
    return Decision(replies, f"transfert {request_id} accepté, archive {archive_id}", [f"archive:{request_id}"])
