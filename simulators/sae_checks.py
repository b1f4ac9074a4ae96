"""What the simulated archive system (SAE) checks in a SEDA package: its own code, not demat's.

Why its own: flows.archive.check is what demat runs before depositing; if the SAE judged with
it, a bug there could never be caught. Here, written for the SAE: the package is read in
memory with caps (members, sizes, ratio), hostile entries refused (absolute paths, `..`, links,
devices); `manifest.xml` at the root is validated against the official SEDA schema of its
version (simulators.reference; the project's schemas when no reference directory exists); every
BinaryDataObject's Uri must be in the package with the declared digest (any algorithm the
manifest names) and size; no file is left unreferenced; file names are unique ignoring accents
and case; the archival agreement must be one the SAE knows; the declared format must match the
content (a PDF starts with %PDF-, XML parses...).

Reply codes (families the platform reads): 101 message malformed, 200 package files, 300
archival agreement, FATAL the SAE could not judge (its schema is missing).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from urllib.parse import unquote

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding
from simulators import reference

SEDA_PREFIX = "fr:gouv:culture:archivesdefrance:seda:v"
VERSIONS = ("2.1", "2.2", "2.3")
MAX_MEMBERS = 10_000
MAX_TOTAL = 2 * 1024**3
MAX_RATIO = 200
RATIO_FLOOR = 64 * 1024**2
DIGESTS = {
    "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512", "SHA-1": "sha1",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256", "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384", "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
}
MALFORMED = {"SAE-PAQUET", "SAE-MANIFESTE", "SAE-SCHEMA", "SAE-VERSION", "SAE-CHEMIN"}


class PackageUnreadable(ValueError):
    """French reason."""


def _f(rule: str, message: str, fix: str = "", value: str = "") -> Finding:
    return Finding(rule, message, fix, value=value, layer="sae")


@dataclass
class Package:
    files: dict[str, bytes] = field(default_factory=dict)


def _safe_name(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/") or any(part == ".." for part in name.split("/")) or ":" in name.split("/")[0]:
        raise PackageUnreadable(f"entrée « {name} » refusée : chemin absolu ou remontée de dossier")
    return name


def read_package(data: bytes) -> Package:
    """Members in memory, capped; raises PackageUnreadable (French) on anything hostile or broken."""
    pkg = Package()
    total = 0

    def add(name: str, content: bytes) -> None:
        nonlocal total
        total += len(content)
        if len(pkg.files) >= MAX_MEMBERS:
            raise PackageUnreadable(f"plus de {MAX_MEMBERS} fichiers dans le paquet")
        if total > MAX_TOTAL or (total > RATIO_FLOOR and total > MAX_RATIO * max(len(data), 1)):
            raise PackageUnreadable("paquet trop volumineux une fois décompressé (bombe de décompression ?)")
        if name in pkg.files:
            raise PackageUnreadable(f"le fichier « {name} » figure deux fois dans le paquet")
        pkg.files[name] = content

    try:
        if data[:2] == b"\x1f\x8b":
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for info in tar:
                    if info.isdir():
                        continue
                    if not info.isfile():
                        raise PackageUnreadable(f"entrée « {info.name} » refusée : lien ou fichier spécial")
                    name = _safe_name(info.name)
                    if info.size > MAX_TOTAL:
                        raise PackageUnreadable(f"fichier « {name} » trop volumineux")
                    fh = tar.extractfile(info)
                    add(name, fh.read() if fh else b"")
        elif data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise PackageUnreadable(f"entrée « {info.filename} » refusée : lien symbolique")
                    name = _safe_name(info.filename)
                    if info.file_size > MAX_TOTAL:
                        raise PackageUnreadable(f"fichier « {name} » trop volumineux")
                    add(name, zf.read(info))
        else:
            raise PackageUnreadable("ni tar.gz ni zip")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise PackageUnreadable(f"archive illisible : {exc}") from exc
    return pkg


def _text(root: etree._Element, local: str) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str) and etree.QName(el).localname == local]


def _child(el: etree._Element, local: str) -> etree._Element | None:
    return next((c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == local), None)


def _fold(name: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)).casefold()


def _format_problem(mime: str, content: bytes) -> str | None:
    mime = (mime or "").lower()
    if mime == "application/pdf":
        if not content.startswith(b"%PDF-"):
            return "annoncé PDF mais ne commence pas par %PDF-"
    elif mime in ("text/xml", "application/xml"):
        try:
            xmlsafe.parse_bytes(content)
        except (etree.XMLSyntaxError, ValueError):
            return "annoncé XML mais illisible comme XML"
    elif mime in ("application/gzip", "application/x-gzip") and not content.startswith(b"\x1f\x8b"):
        return "annoncé gzip mais n'en est pas un"
    return None


def check_package(data: bytes, *, known_agreements: set[str] | None) -> list[Finding]:
    """Every refusal reason of the SAE for this package (empty: accepted). None = any agreement."""
    try:
        pkg = read_package(data)
    except PackageUnreadable as exc:
        rule = "SAE-CHEMIN" if "refusée" in str(exc) else "SAE-PAQUET"
        return [_f(rule, f"Paquet refusé : {exc}.", "Produisez un tar.gz ou un zip sans lien ni chemin dangereux.")]
    manifest = pkg.files.pop("manifest.xml", None)
    if manifest is None:
        return [_f("SAE-MANIFESTE", "Le paquet n'a pas de manifest.xml à sa racine.",
                   "Placez le bordereau SEDA à la racine du paquet sous le nom manifest.xml.")]
    try:
        root = xmlsafe.parse_bytes(manifest)
    except (etree.XMLSyntaxError, ValueError) as exc:
        return [_f("SAE-MANIFESTE", f"manifest.xml illisible : {exc}")]
    ns = etree.QName(root).namespace or ""
    version = ns[len(SEDA_PREFIX):] if ns.startswith(SEDA_PREFIX) else ""
    if version not in VERSIONS or etree.QName(root).localname != "ArchiveTransfer":
        return [_f("SAE-VERSION", f"manifest.xml n'est pas un ArchiveTransfer SEDA 2.1, 2.2 ou 2.3 ({root.tag}).")]
    found: list[Finding] = []
    try:
        problems = reference.errors("seda", root, version=version, limit=5)
    except (reference.SchemaMissing, etree.XMLSchemaParseError, OSError) as exc:
        return [_f("SAE-SCHEMA-INDISPONIBLE", f"Le service d'archives ne peut pas juger le bordereau : {exc}")]
    found += [_f("SAE-SCHEMA", f"Bordereau non conforme au schéma SEDA {version} : {p}") for p in problems]
    agreement = next((el.text or "" for el in _text(root, "ArchivalAgreement")), "").strip()
    if not agreement:
        found.append(_f("SAE-ACCORD", "Aucun accord de versement (ArchivalAgreement) dans le bordereau."))
    elif known_agreements is not None and agreement not in known_agreements:
        found.append(_f("SAE-ACCORD", f"Accord de versement « {agreement} » inconnu du service d'archives.",
                        "Utilisez un accord de versement signé avec le service d'archives.", agreement))
    referenced: set[str] = set()
    folded: dict[str, str] = {}
    for bdo in _text(root, "BinaryDataObject"):
        uri_el = _child(bdo, "Uri") if _child(bdo, "Uri") is not None else _child(bdo, "Attachment")
        uri = unquote((uri_el.text or "").strip()) if uri_el is not None else ""
        ident = bdo.get("id") or "?"
        if not uri:
            found.append(_f("SAE-FICHIER", f"L'objet {ident} n'indique pas son fichier (Uri)."))
            continue
        referenced.add(uri)
        key = _fold(uri)
        if key in folded and folded[key] != uri:
            found.append(_f("SAE-NOM", f"Noms de fichiers identiques aux accents et à la casse près : « {folded[key]} » et "
                                       f"« {uri} ».", value=uri))
        folded[key] = uri
        content = pkg.files.get(uri)
        if content is None:
            found.append(_f("SAE-FICHIER", f"Fichier « {uri} » annoncé dans le bordereau mais absent du paquet.", value=uri))
            continue
        digest = _child(bdo, "MessageDigest")
        algo = DIGESTS.get((digest.get("algorithm") or "") if digest is not None else "")
        if digest is None or algo is None:
            found.append(_f("SAE-EMPREINTE", f"Empreinte de « {uri} » absente ou d'algorithme inconnu.", value=uri))
        elif hashlib.new(algo, content).hexdigest() != (digest.text or "").strip().lower():
            found.append(_f("SAE-EMPREINTE", f"L'empreinte de « {uri} » ne correspond pas à son contenu.", value=uri))
        size = _child(bdo, "Size")
        if size is not None and (size.text or "").strip() != str(len(content)):
            found.append(_f("SAE-TAILLE", f"Taille déclarée de « {uri} » ({(size.text or '').strip()}) différente de "
                                          f"sa taille réelle ({len(content)}).", value=uri))
        fmt = _child(bdo, "FormatIdentification")
        mime = _child(fmt, "MimeType") if fmt is not None else None
        problem = _format_problem((mime.text or "").strip() if mime is not None else "", content)
        if problem:
            found.append(_f("SAE-FORMAT", f"Format de « {uri} » : {problem}.", value=uri))
    for name in sorted(set(pkg.files) - referenced):
        found.append(_f("SAE-FICHIER", f"Fichier « {name} » présent dans le paquet mais décrit nulle part dans le "
                                       "bordereau.", value=name))
    return found


def reply_code(findings: list[Finding]) -> str:
    rules = {f.rule for f in findings if f.severity == "error"}
    if not rules:
        return "000"
    if "SAE-SCHEMA-INDISPONIBLE" in rules:
        return "FATAL"
    if rules & MALFORMED:
        return "101"
    if "SAE-ACCORD" in rules:
        return "300"
    if "SIMULATION" in rules:
        return "400"
    return "200"
