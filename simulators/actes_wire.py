"""What the préfecture reads from a collectivité: its own archive and envelope checks.

Why its own: the simulator must refuse what the ministère refuses (flat member names, size
limits, one EnveloppeCLMISILL announcing its forms) and tell the AnomalieEnveloppe natures apart,
so it does not trust the platform's reader. Its answers are built by flows.actes.messages.
Names: the collectivité's archive TDT-EACT--SIREN--AAAAMMJJ-serial.tar.gz (see flows.actes.naming).
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from dataclasses import dataclass, field

from lxml import etree

from flows import xmlsafe
from flows.actes.model import NS_ACTES, NS_INSEE
from flows.actes.xmlutil import attr, local, q

MAX_MEMBERS = 200
MAX_MEMBER_BYTES = 150 * 1024 * 1024
MAX_TOTAL_BYTES = 160 * 1024 * 1024
SAFE_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
ARCHIVE_SIREN = re.compile(r"EACT--(?P<siren>[0-9]{9})--")
IDACTE_IN_NAME = re.compile(
    r"(?P<idacte>[0-9]{2}[0-9AB]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-[A-Z]{2})-(?P<code>[0-9]-[0-9])"
)


class ArchiveError(ValueError):
    """The archive cannot be read safely (French message)."""


def read_tar_gz(data: bytes) -> list[tuple[str, bytes]]:
    """Flat regular files only; refuses traversal, links, devices, too many or too big members."""
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else None
    except (OSError, EOFError) as exc:
        raise ArchiveError(f"archive gzip illisible : {exc}") from exc
    if raw is None:
        raise ArchiveError("le fichier n'est pas une archive tar.gz")
    if len(raw) > MAX_TOTAL_BYTES:
        raise ArchiveError("archive trop volumineuse une fois décompressée")
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise ArchiveError(f"plus de {MAX_MEMBERS} fichiers dans l'archive")
                if info.isdir():
                    continue
                if not info.isfile():
                    raise ArchiveError(f"membre « {info.name} » refusé : ni fichier ni dossier (lien, périphérique)")
                if not SAFE_MEMBER.match(info.name) or ".." in info.name:
                    raise ArchiveError(f"nom de membre refusé : « {info.name} » (chemin ou caractères interdits)")
                if info.size > MAX_MEMBER_BYTES:
                    raise ArchiveError(f"membre « {info.name} » trop volumineux")
                fh = tar.extractfile(info)
                members.append((info.name, fh.read() if fh else b""))
    except tarfile.TarError as exc:
        raise ArchiveError(f"archive tar illisible : {exc}") from exc
    names = [n for n, _ in members]
    if len(set(names)) != len(names):
        raise ArchiveError("l'archive contient deux fois le même nom de fichier")
    return members


@dataclass
class Received:
    """An archive from the collectivité, read: envelope, its message and the other files."""

    archive_name: str
    siren: str = ""
    departement: str = ""
    arrondissement: str = ""
    envelope_name: str = ""
    envelope: etree._Element | None = None
    message_name: str = ""
    message: etree._Element | None = None
    message_bytes: bytes = b""
    envelope_bytes: bytes = b""
    kind: str = ""
    idacte: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (AnomalieEnveloppe nature, French detail)


def read_received(archive_name: str, data: bytes) -> Received:
    """Never raises: a fault stops the reading and lands in `problems` for an AnomalieEnveloppe."""
    r = Received(archive_name=archive_name)
    m = ARCHIVE_SIREN.search(archive_name)
    if m:
        r.siren = m.group("siren")
    try:
        members = read_tar_gz(data)
    except ArchiveError as exc:
        r.problems.append(("004", f"Archive illisible : {exc}"))
        return r
    files = dict(members)
    envelopes = [n for n in files if n.startswith("EACT--") and n.endswith(".xml")]
    if len(envelopes) != 1:
        r.problems.append(("001", f"L'archive doit contenir exactement une enveloppe EACT--*.xml ({len(envelopes)} trouvée(s))."))
        return r
    r.envelope_name = envelopes[0]
    r.envelope_bytes = files.pop(r.envelope_name)
    try:
        env = xmlsafe.parse_bytes(r.envelope_bytes)
    except (etree.XMLSyntaxError, ValueError) as exc:
        r.problems.append(("001", f"Enveloppe illisible : {exc}"))
        return r
    if local(env) != "EnveloppeCLMISILL" or etree.QName(env).namespace != NS_ACTES:
        r.problems.append(("001", f"L'enveloppe n'est pas une EnveloppeCLMISILL @ctes v1.1 ({local(env)})."))
        return r
    r.envelope = env
    idcl = env.find(f"{q('Emetteur')}/{q('IDCL')}")
    if idcl is None:
        r.problems.append(("001", "Enveloppe sans émetteur (Emetteur/IDCL)."))
        return r
    r.siren = idcl.get(f"{{{NS_INSEE}}}SIREN") or r.siren
    r.departement = attr(idcl, "Departement")
    r.arrondissement = attr(idcl, "Arrondissement")
    listed = [(e.text or "").strip() for e in env.iter(q("NomFichier"))]
    if not listed:
        r.problems.append(("003", "L'enveloppe n'annonce aucun formulaire (FormulairesEnvoyes)."))
        return r
    missing = [n for n in listed if n not in files]
    if missing:
        r.problems.append(("003", f"Formulaire(s) annoncé(s) par l'enveloppe mais absent(s) de l'archive : {', '.join(missing)}."))
        return r
    r.message_name = listed[0]
    r.message_bytes = files.pop(r.message_name)
    try:
        r.message = xmlsafe.parse_bytes(r.message_bytes)
    except (etree.XMLSyntaxError, ValueError) as exc:
        r.problems.append(("001", f"Formulaire « {r.message_name} » illisible : {exc}"))
        return r
    r.kind = local(r.message)
    r.files = files
    m = IDACTE_IN_NAME.search(r.message_name)
    r.idacte = attr(r.message, "IDActe") or (m.group("idacte") if m else "")
    return r
