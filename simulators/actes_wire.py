"""The ministère's side of @ctes, written independently of flows.actes.

Why independent: the préfecture simulator is the other end of the wire; writing its messages
with our own code (from the schema and the reference samples) means the platform's parser is
tested against a second implementation, not against itself. Reading uses flows.xmlsafe.

Message codes follow the cahier des charges as used by S²LOW (1-2 ARActe, 1-3 AnomalieActe,
2-1 CourrierSimple, 3-1 DemandePieceComplementaire, 3-5 ARPieceComplementaire, 4-1
LettreObservations, 4-5 ARReponseRejetLettreObservations, 6-2 ARAnnulation, 7-2
RetourClassification). Names: envelope EACT--SPREFdddA-SIREN-AAAAMMJJ-serial.xml (as in the
reference sample), messages IDACTE-CODE_0.xml, documents IDACTE-CODE_1.pdf, archive
<envelope stem>.tar.gz.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from dataclasses import dataclass, field
from datetime import date

from lxml import etree

from flows import xmlsafe

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
NS_INSEE = "http://xml.insee.fr/schema"
NSMAP = {"actes": NS, "insee": NS_INSEE}

CODES = {
    "Acte": "1-1", "ARActe": "1-2", "AnomalieActe": "1-3",
    "AnomalieEnveloppe": "1-3",  # no code of its own in the lists we know: carried like an anomaly
    "CourrierSimple": "2-1", "ReponseCourrierSimple": "2-2",
    "DemandePieceComplementaire": "3-1", "ARDemandePieceComplementaire": "3-2",
    "RefusPieceComplementaire": "3-3", "PieceComplementaire": "3-4", "ARPieceComplementaire": "3-5",
    "LettreObservations": "4-1", "ARLettreObservations": "4-2", "RejetLettreObservations": "4-3",
    "ReponseLettreObservations": "4-4", "ARReponseRejetLettreObservations": "4-5",
    "DefereTA": "5-1", "Annulation": "6-1", "ARAnnulation": "6-2",
    "DemandeClassification": "7-1", "RetourClassification": "7-2", "ReponseClassificationSansChangement": "7-3",
}

MAX_MEMBERS = 200
MAX_MEMBER_BYTES = 150 * 1024 * 1024
MAX_TOTAL_BYTES = 160 * 1024 * 1024
SAFE_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
ARCHIVE_SIREN = re.compile(r"EACT--(?P<siren>[0-9]{9})--")
IDACTE_RE = re.compile(r"^[0-9]{2}[0-9AB]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-[A-Z]{2}$")
IDACTE_IN_NAME = re.compile(
    r"(?P<idacte>[0-9]{2}[0-9AB]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-[A-Z]{2})-(?P<code>[0-9]-[0-9])"
)

# A one-page PDF, enough for a courrier attached to a simulated message.
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
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


def write_tar_gz(members: list[tuple[str, bytes]], mtime: int = 0) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=mtime) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = mtime
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def q(name: str) -> str:
    return f"{{{NS}}}{name}"


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def attr(el: etree._Element | None, name: str) -> str:
    if el is None:
        return ""
    value = el.get(q(name))
    return value if value is not None else (el.get(name) or "")


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
    if local(env) != "EnveloppeCLMISILL" or etree.QName(env).namespace != NS:
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


# -- builders ---------------------------------------------------------------------------------


def _root(kind: str, **attrs: str) -> etree._Element:
    el = etree.Element(q(kind), nsmap=NSMAP)
    for k, v in attrs.items():
        el.set(q(k), v)
    return el


def _sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, q(name))
    for k, v in attrs.items():
        el.set(q(k), v)
    if text is not None:
        el.text = text
    return el


def to_bytes(el: etree._Element) -> bytes:
    return etree.tostring(el, xml_declaration=True, encoding="ISO-8859-1", pretty_print=True)


def _acte_recu(parent: etree._Element, acte: etree._Element | None) -> None:
    """Copy the received DonneesActe (attributes and children) as ActeRecu."""
    recu = _sub(parent, "ActeRecu")
    if acte is None:
        return
    for k, v in acte.attrib.items():
        if etree.QName(k).localname != "schemaLocation":
            recu.set(k, v)
    for child in acte:
        if isinstance(child.tag, str):
            recu.append(etree.fromstring(etree.tostring(child), xmlsafe.parser()))


def build_aracte(idacte: str, received: date, acte: etree._Element | None, classification: date) -> bytes:
    root = _root("ARActe", IDActe=idacte, DateReception=received.isoformat())
    _acte_recu(root, acte)
    _sub(root, "ClassificationDateVersionEnCours", classification.isoformat())
    return to_bytes(root)


def build_anomalie_acte(day: date, nature: str, detail: str, acte: etree._Element | None, classification: date) -> bytes:
    root = _root("AnomalieActe")
    _sub(root, "Date", day.isoformat())
    _sub(root, "Nature", nature)
    _sub(root, "Detail", detail)
    _acte_recu(root, acte)
    _sub(root, "ClassificationDateVersionEnCours", classification.isoformat())
    return to_bytes(root)


def build_anomalie_enveloppe(day: date, nature: str, detail: str, envelope: etree._Element | None) -> bytes:
    root = _root("AnomalieEnveloppe")
    _sub(root, "Date", day.isoformat())
    _sub(root, "Nature", nature)
    _sub(root, "Detail", detail)
    recu = _sub(root, "EnveloppeRecue")
    if envelope is not None:
        for child in envelope:
            if isinstance(child.tag, str):
                recu.append(etree.fromstring(etree.tostring(child), xmlsafe.parser()))
    return to_bytes(root)


def build_ar_annulation(idacte: str, received: date) -> bytes:
    return to_bytes(_root("ARAnnulation", IDActe=idacte, DateReception=received.isoformat()))


def build_courrier(kind: str, idacte: str, day: date, document_name: str, text: str = "") -> bytes:
    """CourrierSimple (2-1), DemandePieceComplementaire (3-1) or LettreObservations (4-1)."""
    root = _root(kind, IDActe=idacte, DateCourrierPref=day.isoformat())
    if kind == "DemandePieceComplementaire":
        _sub(root, "DescriptionPieces", text or "Merci de transmettre la délibération signée et ses annexes.")
    elif kind == "LettreObservations":
        _sub(root, "Motif", text or "Observations sur la légalité de l'acte transmis.")
    _sub(_sub(root, "Document"), "NomFichier", document_name)
    return to_bytes(root)


def build_ar_reponse(kind: str, idacte: str, date_courrier: date, received: date) -> bytes:
    """ARPieceComplementaire (3-5) or ARReponseRejetLettreObservations (4-5)."""
    root = _root(kind, DateReception=received.isoformat())
    _sub(root, "InfosCourrierPref", IDActe=idacte, DateCourrierPref=date_courrier.isoformat())
    return to_bytes(root)


def build_retour_classification_minimal(day: date) -> bytes:
    """A small RetourClassification: the six natures and the level-1 matières."""
    natures = [("1", "Délibérations", "DE"), ("2", "Actes réglementaires", "AR"), ("3", "Actes individuels", "AI"),
               ("4", "Contrats, conventions et avenants", "CC"), ("5", "Documents budgétaires et financiers", "BF"),
               ("6", "Autres", "AU")]
    matieres = ["Commande publique", "Urbanisme", "Domaine et patrimoine", "Fonction publique",
                "Institutions et vie politique", "Libertés publiques et pouvoirs de police", "Finances locales",
                "Domaines de compétences par thèmes", "Autres domaines de compétences"]
    root = _root("RetourClassification")
    _sub(root, "DateClassification", day.isoformat())
    nat = _sub(root, "NaturesActes")
    for code, label, abbr in natures:
        n = _sub(nat, "NatureActe", CodeNatureActe=code, Libelle=label, TypeAbrege=abbr)
        _sub(n, "TypePJNatureActe", CodeTypePJ=f"99_{'BU' if abbr == 'BF' else abbr}", Libelle=label)
    mat = _sub(root, "Matieres")
    for i, label in enumerate(matieres, 1):
        m1 = _sub(mat, "Matiere1", CodeMatiere=str(i), Libelle=label)
        _sub(m1, "Matiere2", CodeMatiere="1", Libelle=label)
    return to_bytes(root)


def build_envelope(departement: str, arrondissement: str, siren: str, formulaires: list[str]) -> bytes:
    root = _root("EnveloppeMISILLCL")
    emetteur = _sub(root, "Emetteur")
    _sub(emetteur, "IDSousPref", Departement=departement or "000", Arrondissement=arrondissement or "0")
    referent = _sub(emetteur, "Referent")
    _sub(referent, "Nom", "Préfecture simulée demat")
    _sub(referent, "Telephone", "0100000000")
    _sub(referent, "Email", "controle-legalite@prefecture.example")
    form = _sub(root, "FormulairesEnvoyes")
    for name in formulaires:
        _sub(_sub(form, "Formulaire"), "NomFichier", name)
    dest = _sub(root, "Destinataire")
    dest.set(f"{{{NS_INSEE}}}SIREN", siren or "000000000")
    return to_bytes(root)


def envelope_name(departement: str, arrondissement: str, siren: str, day: date, serial: int) -> str:
    return f"EACT--SPREF{departement or '000'}{arrondissement or '0'}-{siren or '000000000'}-{day:%Y%m%d}-{serial}.xml"


def response_archive(
    departement: str, arrondissement: str, siren: str, day: date, serial: int,
    message_name: str, message: bytes, documents: dict[str, bytes] | None = None,
) -> tuple[str, bytes]:
    """(archive name, tar.gz bytes) of one message from the ministère with its documents."""
    env_name = envelope_name(departement, arrondissement, siren, day, serial)
    env = build_envelope(departement, arrondissement, siren, [message_name])
    members = [(env_name, env), (message_name, message), *(documents or {}).items()]
    return env_name.removesuffix(".xml") + ".tar.gz", write_tar_gz(members)


def message_name(idacte: str, kind: str, siren: str = "", departement: str = "") -> str:
    code = CODES[kind]
    if idacte:
        return f"{idacte}-{code}_0.xml"
    return f"{departement or '000'}-{siren or '000000000'}----{code}_0.xml"
