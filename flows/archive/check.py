"""What an archive system (SAE) checks when it receives a SEDA package, and a package summary.

The package is hostile until proven otherwise: it is read without extracting anything to disk,
entries with absolute paths, `..`, links or devices are refused, the number of entries and the
total uncompressed size are capped before reading past them (zip and gzip bombs), and a zip whose
declared size or CRC lies is caught while streaming. Then the bordereau: `manifest.xml` at the
root, valid against the official schema of its version, every BinaryDataObject's Uri present with
the declared digest and size, no file left unreferenced, names unique ignoring accents and case,
and a known archival agreement. Messages are in French.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from lxml import etree

from flows import xmlsafe
from flows.archive.formats import hash_name, name_key
from flows.archive.schemas import SchemaUnavailable, syntax_french, validate_manifest, version_of_namespace
from flows.findings import Finding, UnreadableFile

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_members: int = 10_000
    max_total_bytes: int = 8 * 1024**3  # uncompressed
    max_ratio: int = 200  # uncompressed / compressed, checked once past `ratio_floor`
    ratio_floor: int = 64 * 1024**2
    max_manifest_bytes: int = 64 * 1024**2


DEFAULT_LIMITS = Limits()


def _f(rule: str, message: str, fix: str = "", *, place: str = "", value: str = "", layer: str = "paquet",
       severity: str = "error") -> Finding:
    return Finding(rule, message, fix, place, value, severity, layer)  # type: ignore[arg-type]


@dataclass
class _Entry:
    name: str  # normalised: no leading "./", '/' separators
    size: int
    compressed: int | None = None


@dataclass
class _Archive:
    fmt: str
    source: bytes | Path
    entries: dict[str, _Entry] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    manifest: bytes | None = None
    limits: Limits = DEFAULT_LIMITS

    def _open(self) -> IO[bytes]:
        if isinstance(self.source, (bytes, bytearray, memoryview)):
            return io.BytesIO(self.source)
        return open(self.source, "rb")  # noqa: SIM115 - closed by the caller

    def stream(self, wanted: set[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        """(name, chunks) for each wanted entry, in archive order, reading each entry once."""
        with self._open() as fh:
            if self.fmt == "zip":
                with zipfile.ZipFile(fh) as zf:
                    for info in zf.infolist():
                        name = _normalise(info.filename)
                        if name in wanted and self.entries.get(name) is not None:
                            wanted = wanted - {name}
                            yield name, _zip_chunks(zf, info)
                return
            with tarfile.open(fileobj=fh, mode=_tar_mode(self.fmt)) as tar:
                seen = 0
                while wanted:
                    m = tar.next()
                    if m is None:
                        return
                    seen += 1
                    if seen > self.limits.max_members:
                        return
                    name = _normalise(m.name)
                    if m.isfile() and name in wanted:
                        wanted = wanted - {name}
                        yield name, _tar_chunks(tar, m)


def _zip_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    with zf.open(info) as src:
        read = 0
        while chunk := src.read(CHUNK):
            read += len(chunk)
            if read > info.file_size:  # zipfile already stops at file_size; belt and braces
                raise zipfile.BadZipFile("données au-delà de la taille déclarée")
            yield chunk
        if read != info.file_size:
            raise zipfile.BadZipFile(f"{read} octets lus pour {info.file_size} déclarés")


def _tar_chunks(tar: tarfile.TarFile, m: tarfile.TarInfo) -> Iterator[bytes]:
    src = tar.extractfile(m)
    assert src is not None
    while chunk := src.read(CHUNK):
        yield chunk


def _tar_mode(fmt: str) -> str:
    return "r:gz" if fmt == "tar.gz" else "r:"


_DRIVE = re.compile(r"^[A-Za-z]:")


def _normalise(raw: str) -> str:
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _unsafe_name(raw: str) -> str | None:
    """Why an entry name is dangerous, or None."""
    if "\x00" in raw:
        return "caractère nul dans le nom"
    if "\\" in raw:
        return "séparateur « \\ » (chemin Windows)"
    if raw.startswith("/") or _DRIVE.match(raw):
        return "chemin absolu"
    if ".." in raw.replace("\\", "/").split("/"):
        return "remontée de répertoire « .. »"
    return None


def _detect(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _open_archive(source: bytes | str | Path, limits: Limits) -> _Archive:
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            with path.open("rb") as fh:
                head = fh.read(512)
            compressed_size = path.stat().st_size
        except OSError as exc:
            raise UnreadableFile(f"Paquet illisible : {path} : {exc.strerror}") from exc
        src: bytes | Path = path
    else:
        head = bytes(source[:512])
        compressed_size = len(source)
        src = source
    if not head:
        raise UnreadableFile("Paquet vide : aucun octet reçu.")
    fmt = _detect(head)
    if fmt is None:
        raise UnreadableFile("Format de paquet non reconnu : ni zip, ni tar.gz, ni tar.")
    arc = _Archive(fmt, src, limits=limits)
    if fmt == "zip":
        _list_zip(arc, compressed_size)
    else:
        _list_tar(arc, compressed_size)
    return arc


def _add(arc: _Archive, raw: str, size: int, kind: str) -> str | None:
    why = _unsafe_name(raw)
    if why:
        arc.findings.append(_f("SEDA-CHEMIN-DANGEREUX", f"Entrée refusée ({why}) : elle n'est pas lue.",
                               "Placez les fichiers sous Content/ avec des chemins relatifs simples.", value=raw))
        return None
    if kind == "link":
        arc.findings.append(_f("SEDA-LIEN", "Lien symbolique, lien physique ou fichier spécial refusé dans le paquet.",
                               "Mettez le fichier lui-même dans le paquet, pas un lien.", value=raw))
        return None
    name = _normalise(raw)
    if kind == "dir" or not name:
        return None
    if name in arc.entries:
        arc.findings.append(_f("SEDA-ENTREE-DOUBLE", "Le même chemin apparaît deux fois dans l'archive.",
                               "Chaque fichier ne doit figurer qu'une fois.", value=name))
        return None
    arc.entries[name] = _Entry(name, size)
    return name


def _bomb(arc: _Archive, what: str) -> None:
    arc.findings.append(_f("SEDA-BOMBE", f"Paquet refusé : {what}.",
                           "Découpez le versement en plusieurs paquets ou vérifiez l'outil qui l'a produit.",
                           layer="securite"))


def _list_zip(arc: _Archive, compressed_size: int) -> None:
    limits = arc.limits
    with arc._open() as fh:
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise UnreadableFile(f"Archive zip illisible : {exc}") from exc
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                _bomb(arc, f"{len(infos)} entrées (maximum {limits.max_members})")
                return
            total = 0
            for info in infos:
                mode = info.external_attr >> 16
                kind = "dir" if info.is_dir() else "file"
                if info.create_system == 3 and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                    kind = "link"
                if info.flag_bits & 0x1:
                    arc.findings.append(_f("SEDA-CHIFFRE", "Entrée chiffrée : le service d'archives ne peut pas la lire.",
                                           "Versez les fichiers en clair.", value=info.filename))
                    continue
                total += info.file_size
                if total > limits.max_total_bytes:
                    _bomb(arc, f"taille décompressée déclarée supérieure à {limits.max_total_bytes} octets")
                    return
                if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                    _bomb(arc, f"taux de compression anormal pour « {info.filename} » "
                               f"({info.file_size} octets pour {info.compress_size} compressés)")
                    return
                name = _add(arc, info.filename, info.file_size, kind)
                if name is not None:
                    arc.entries[name].compressed = info.compress_size
            if "manifest.xml" in arc.entries:
                size = arc.entries["manifest.xml"].size
                if size > limits.max_manifest_bytes:
                    arc.findings.append(_f("SEDA-MANIFESTE-TROP-GROS", f"manifest.xml fait {size} octets "
                                           f"(maximum {limits.max_manifest_bytes}).", value=str(size)))
                    return
                try:
                    arc.manifest = b"".join(_zip_chunks(zf, zf.getinfo(_raw_name(zf, "manifest.xml"))))
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                    arc.findings.append(_f("SEDA-ARCHIVE-CORROMPUE", f"manifest.xml illisible dans l'archive : {exc}",
                                           "Reconstruisez le paquet.", value="manifest.xml"))


def _raw_name(zf: zipfile.ZipFile, normalised: str) -> str:
    return next(i.filename for i in zf.infolist() if _normalise(i.filename) == normalised)


def _list_tar(arc: _Archive, compressed_size: int) -> None:
    limits = arc.limits
    with arc._open() as fh:
        try:
            tar = tarfile.open(fileobj=fh, mode=_tar_mode(arc.fmt))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise UnreadableFile(f"Archive tar illisible : {exc}") from exc
        with tar:
            total = count = 0
            while True:
                try:
                    m = tar.next()
                except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                    arc.findings.append(_f("SEDA-ARCHIVE-CORROMPUE", f"Archive tar tronquée ou corrompue : {exc}",
                                           "Reconstruisez le paquet et renvoyez-le.", layer="lecture"))
                    return
                if m is None:
                    _check_tail(arc, tar)
                    return
                count += 1
                if count > limits.max_members:
                    _bomb(arc, f"plus de {limits.max_members} entrées")
                    return
                kind = "file" if m.isfile() else "dir" if m.isdir() else "link"
                if kind == "file":
                    total += m.size
                    if total > limits.max_total_bytes:
                        _bomb(arc, f"taille décompressée supérieure à {limits.max_total_bytes} octets")
                        return
                    if total > limits.ratio_floor and total > limits.max_ratio * max(compressed_size, 1):
                        _bomb(arc, f"taux de compression anormal ({total} octets pour {compressed_size} compressés)")
                        return
                name = _add(arc, m.name, m.size, kind)
                if name == "manifest.xml":
                    if m.size > limits.max_manifest_bytes:
                        arc.findings.append(_f("SEDA-MANIFESTE-TROP-GROS", f"manifest.xml fait {m.size} octets "
                                               f"(maximum {limits.max_manifest_bytes}).", value=str(m.size)))
                        continue
                    try:
                        arc.manifest = b"".join(_tar_chunks(tar, m))
                    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                        arc.findings.append(_f("SEDA-ARCHIVE-CORROMPUE", f"manifest.xml illisible : {exc}",
                                               "Reconstruisez le paquet.", value="manifest.xml"))
                        return


def _check_tail(arc: _Archive, tar: tarfile.TarFile) -> None:
    """After the end-of-archive marker: only zero padding, and (tar.gz) an intact gzip trailer.

    tarfile stops at the marker and never reads the gzip CRC; data hidden after the marker would
    travel into the archive unseen.
    """
    extra = 0
    try:
        while chunk := tar.fileobj.read(CHUNK):
            extra += len(chunk)
            if chunk.strip(b"\0") or extra > 1024 * 1024:
                arc.findings.append(_f("SEDA-DONNEES-CACHEES", "Des données suivent la fin de l'archive tar : "
                                       "elles échappent au contrôle.", "Reconstruisez le paquet sans données ajoutées.",
                                       layer="securite"))
                return
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        arc.findings.append(_f("SEDA-ARCHIVE-CORROMPUE", f"Fin de l'archive compressée corrompue (CRC gzip) : {exc}",
                               "Reconstruisez le paquet et renvoyez-le.", layer="lecture"))


# --- the bordereau ------------------------------------------------------------------------------


@dataclass
class _Object:
    id: str
    uri: str | None
    filename: str | None
    digest: str | None
    algorithm: str | None
    size: int | None
    size_raw: str | None
    mime: str | None
    format_id: str | None
    attachment: bool = False


def _parse_manifest(manifest: bytes) -> tuple[etree._Element | None, list[Finding]]:
    try:
        return xmlsafe.parse_bytes(manifest), []
    except xmlsafe.UnsafeXML as exc:
        return None, [_f("SEDA-MANIFESTE-ILLISIBLE", str(exc), "Retirez toute déclaration DOCTYPE.", layer="lecture")]
    except etree.XMLSyntaxError as exc:
        return None, [_f("SEDA-MANIFESTE-ILLISIBLE", f"manifest.xml n'est pas un XML bien formé : {syntax_french(exc.msg)}",
                         "Régénérez le bordereau.", layer="lecture")]


def _objects(root: etree._Element) -> list[_Object]:
    ns = {"s": etree.QName(root).namespace or ""}
    out = []
    for bdo in root.iterfind(".//s:DataObjectPackage//s:BinaryDataObject", ns):
        def t(path: str, base=bdo) -> str | None:
            e = base.find(path, ns)
            return " ".join(e.text.split()) if e is not None and e.text and e.text.strip() else None

        md = bdo.find("s:MessageDigest", ns)
        size_raw = t("s:Size")
        out.append(
            _Object(
                id=bdo.get("id") or "",
                uri=t("s:Uri"),
                filename=t("s:FileInfo/s:Filename"),
                digest=t("s:MessageDigest"),
                algorithm=md.get("algorithm") if md is not None else None,
                size=int(size_raw) if size_raw and size_raw.isdigit() else None,
                size_raw=size_raw,
                mime=t("s:FormatIdentification/s:MimeType"),
                format_id=t("s:FormatIdentification/s:FormatId"),
                attachment=bdo.find("s:Attachment", ns) is not None,
            )
        )
    return out


def _resolve_uri(uri: str, entries: dict[str, _Entry]) -> str | None:
    for candidate in (uri, unquote(uri)):
        if "://" in candidate or _unsafe_name(candidate):
            continue
        name = _normalise(candidate)
        if name in entries:
            return name
    return None


def check_package(
    data: bytes | str | Path,
    *,
    known_agreements: set[str] | frozenset[str] | None = None,
    version: str | None = None,
    reference_dir: str | Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Everything an archive system checks on reception. Empty list: the package is acceptable.

    `known_agreements` None (the `demat` command line, which knows no archive system): the agreement
    is read but not judged, and a warning says so.
    """
    try:
        arc = _open_archive(data, limits)
    except UnreadableFile as exc:
        return [_f("SEDA-ARCHIVE-ILLISIBLE", str(exc), "Envoyez un paquet tar.gz ou zip valide.", layer="lecture")]
    findings = list(arc.findings)
    if any(f.rule == "SEDA-BOMBE" for f in findings):
        return findings
    if arc.manifest is None:
        if "manifest.xml" not in arc.entries and not any(f.rule.startswith("SEDA-MANIFESTE") for f in findings):
            nested = [n for n in arc.entries if n.endswith("/manifest.xml")]
            where = f" (trouvé dans « {nested[0]} » : il doit être à la racine)" if nested else ""
            findings.append(_f("SEDA-MANIFESTE-ABSENT", f"Le bordereau manifest.xml est absent de la racine du paquet{where}.",
                               "Placez manifest.xml à la racine de l'archive, les fichiers sous Content/."))
        return findings
    root, problems = _parse_manifest(arc.manifest)
    findings += problems
    if root is None:
        return findings
    try:
        findings += validate_manifest(root, version, reference_dir=reference_dir)
    except SchemaUnavailable as exc:
        findings.append(_f("SEDA-SCHEMA-INDISPONIBLE", str(exc), "Faute de l'installation, pas du paquet : réinstallez "
                           "demat ou corrigez DEMAT_REFERENCE_DIR, puis relancez le contrôle.", layer="installation"))
    ns = {"s": etree.QName(root).namespace or ""}
    if etree.QName(root).localname != "ArchiveTransfer":
        findings.append(_f("SEDA-MESSAGE", f"Le bordereau est un « {etree.QName(root).localname} », pas un ArchiveTransfer.",
                           "Versez un bordereau de transfert (ArchiveTransfer).", layer="metier"))
        return findings

    agreement_el = root.find("s:ArchivalAgreement", ns)
    agreement = (agreement_el.text or "").strip() if agreement_el is not None else ""
    if not agreement:
        findings.append(_f("SEDA-ACCORD-ABSENT", "Le bordereau ne cite aucun accord de versement (ArchivalAgreement).",
                           "Renseignez l'accord de versement convenu avec le service d'archives.", layer="metier"))
    elif known_agreements is None:
        findings.append(_f("SEDA-ACCORD-NON-VERIFIE", "Accord de versement lu mais non vérifié : seul le service "
                           "d'archives connaît ses accords.", "Vérifiez que l'accord figure parmi ceux convenus avec "
                           "le service d'archives.", value=agreement, layer="metier", severity="warning"))
    elif agreement not in known_agreements:
        findings.append(_f("SEDA-ACCORD-INCONNU", "Accord de versement inconnu du service d'archives.",
                           "Utilisez un accord de versement déclaré auprès du service d'archives (profil d'archivage "
                           "de la collectivité).", value=agreement, layer="metier"))

    objects = _objects(root)
    referenced: set[str] = set()
    wanted: dict[str, list[tuple[_Object, str]]] = {}
    seen_uris: dict[str, str] = {}
    for obj in objects:
        place = f"objet {obj.id}" + (f" ({obj.filename})" if obj.filename else "")
        if obj.attachment:
            findings.append(_f("SEDA-ATTACHMENT", "Objet transmis en ligne (Attachment) : non pris en charge par ce contrôle.",
                               "Placez le fichier dans le paquet et référencez-le par Uri.", place=place, severity="warning"))
            continue
        if not obj.uri:
            findings.append(_f("SEDA-URI-ABSENTE", "Objet sans Uri : le fichier correspondant ne peut pas être trouvé.",
                               "Renseignez Uri avec le chemin du fichier dans le paquet (Content/...).", place=place))
            continue
        name = _resolve_uri(obj.uri, arc.entries)
        if name is None:
            findings.append(_f("SEDA-FICHIER-ABSENT", "Le fichier déclaré dans le bordereau est absent du paquet.",
                               "Ajoutez le fichier au paquet ou corrigez son Uri.", place=place, value=obj.uri))
            continue
        if name in seen_uris:
            findings.append(_f("SEDA-URI-DOUBLE", f"Deux objets désignent le même fichier (déjà cité par {seen_uris[name]}).",
                               "Chaque objet doit avoir son propre fichier.", place=place, value=obj.uri))
        seen_uris.setdefault(name, obj.id)
        referenced.add(name)
        if obj.size is not None and obj.size != arc.entries[name].size:
            findings.append(_f("SEDA-TAILLE", f"Taille déclarée {obj.size} octets, taille réelle {arc.entries[name].size} octets.",
                               "Recalculez la taille (Size) ou renvoyez le bon fichier.", place=place, value=obj.size_raw or ""))
        if obj.size is None and arc.entries[name].size > 0 and obj.size_raw is None:
            findings.append(_f("SEDA-TAILLE-ABSENTE", "Taille (Size) non déclarée.", "Déclarez la taille du fichier.",
                               place=place, severity="warning"))
        if not obj.digest or not obj.algorithm:
            findings.append(_f("SEDA-EMPREINTE", "Empreinte (MessageDigest) absente.", "Déclarez l'empreinte du fichier.",
                               place=place))
            continue
        try:
            algo = hash_name(obj.algorithm, allow_weak=True)
        except ValueError as exc:
            findings.append(_f("SEDA-ALGORITHME", f"Algorithme d'empreinte non reconnu : {exc}.",
                               "Utilisez SHA-256 ou SHA-512 (orthographe convenue avec le service d'archives).",
                               place=place, value=obj.algorithm))
            continue
        if algo in ("sha1", "md5"):
            findings.append(_f("SEDA-ALGORITHME-FAIBLE", f"Algorithme d'empreinte trop faible pour l'archivage ({obj.algorithm}).",
                               "Utilisez SHA-256 ou SHA-512.", place=place, value=obj.algorithm, severity="warning"))
        wanted.setdefault(name, []).append((obj, algo))

    # the one pass over the content: digests of every referenced file
    try:
        for name, chunks in arc.stream(set(wanted)):
            hashers = {algo: hashlib.new(algo) for _, algo in wanted[name]}
            try:
                for chunk in chunks:
                    for h in hashers.values():
                        h.update(chunk)
            except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
                findings.append(_f("SEDA-ARCHIVE-CORROMPUE", f"Fichier illisible dans l'archive (taille ou CRC mensongers) : {exc}",
                                   "Reconstruisez le paquet.", place=name, layer="lecture"))
                continue
            for obj, algo in wanted[name]:
                actual = hashers[algo].hexdigest()
                if actual.lower() != (obj.digest or "").strip().lower():
                    findings.append(_f("SEDA-EMPREINTE", "L'empreinte du fichier ne correspond pas à celle du bordereau : "
                                       "fichier altéré ou bordereau faux.",
                                       "Recalculez l'empreinte avec l'algorithme déclaré ou renvoyez le bon fichier.",
                                       place=f"objet {obj.id} ({name})", value=f"{obj.algorithm} attendu {obj.digest}, calculé {actual}"))
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        findings.append(_f("SEDA-ARCHIVE-CORROMPUE", f"Archive illisible pendant le contrôle des empreintes : {exc}",
                           "Reconstruisez le paquet.", layer="lecture"))

    for name in arc.entries:
        if name != "manifest.xml" and name not in referenced:
            findings.append(_f("SEDA-FICHIER-NON-REFERENCE", "Fichier présent dans le paquet mais absent du bordereau.",
                               "Retirez le fichier ou déclarez-le par un BinaryDataObject.", value=name))
    by_key: dict[str, list[str]] = {}
    for name in arc.entries:
        by_key.setdefault(name_key(name), []).append(name)
    for names in by_key.values():
        if len(names) > 1:
            findings.append(_f("SEDA-NOM-DOUBLON", "Noms de fichiers identiques aux accents et à la casse près : "
                               "ils s'écrasent à l'extraction sur beaucoup de systèmes.",
                               "Renommez les fichiers pour qu'ils diffèrent autrement que par les accents ou la casse.",
                               value=" / ".join(names)))
    return findings


def reply_code_for(findings: list[Finding]) -> str:
    """The ReplyCode the SAE simulator answers with: 000, 101 (bordereau), 200 (files), 300 (agreement).

    FATAL when the archive system could not judge (its schema is unavailable): its own fault, never
    the package's, and the transfer is to be sent again.
    """
    errors = [f for f in findings if f.severity == "error"]
    if not errors:
        return "000"
    rules = {f.rule for f in errors}
    if "SEDA-SCHEMA-INDISPONIBLE" in rules:
        return "FATAL"
    if rules & {"SEDA-ARCHIVE-ILLISIBLE", "SEDA-MANIFESTE-ABSENT", "SEDA-MANIFESTE-ILLISIBLE", "SEDA-XSD",
                "SEDA-VERSION", "SEDA-MESSAGE", "SEDA-BOMBE", "SEDA-CHEMIN-DANGEREUX", "SEDA-LIEN"}:
        return "101"
    if rules & {"SEDA-ACCORD-INCONNU", "SEDA-ACCORD-ABSENT"}:
        return "300"
    return "200"


def read_package(data: bytes | str | Path, *, limits: Limits = DEFAULT_LIMITS) -> dict:
    """A summary of a SEDA package for `demat inspect` (no digest computed; see check_package)."""
    arc = _open_archive(data, limits)
    if arc.manifest is None:
        raise UnreadableFile("Paquet sans manifest.xml à la racine : ce n'est pas un paquet SEDA lisible.")
    root, problems = _parse_manifest(arc.manifest)
    if root is None:
        raise UnreadableFile(problems[0].message)
    q = etree.QName(root)
    ns = {"s": q.namespace or ""}

    def t(path: str, base=root) -> str | None:
        e = base.find(path, ns)
        return " ".join(e.text.split()) if e is not None and e.text and e.text.strip() else None

    objects = []
    for obj in _objects(root):
        name = _resolve_uri(obj.uri, arc.entries) if obj.uri else None
        objects.append({
            "id": obj.id, "uri": obj.uri, "filename": obj.filename, "size": obj.size,
            "digest": obj.digest, "algorithm": obj.algorithm, "mime": obj.mime, "format_id": obj.format_id,
            "in_package": name is not None, "size_in_package": arc.entries[name].size if name else None,
        })

    units = []

    def walk(unit: etree._Element, depth: int) -> None:
        refs = [r.text.strip() for r in unit.iterfind("s:DataObjectReference/*", ns) if r.text and r.text.strip()]
        units.append({
            "id": unit.get("id"), "depth": depth,
            "level": t("s:Content/s:DescriptionLevel", unit), "title": t("s:Content/s:Title", unit),
            "archival_agency_identifier": t("s:Content/s:ArchivalAgencyArchiveUnitIdentifier", unit),
            "objects": refs,
        })
        for child in unit.iterfind("s:ArchiveUnit", ns):
            walk(child, depth + 1)

    for top in root.iterfind("s:DataObjectPackage/s:DescriptiveMetadata/s:ArchiveUnit", ns):
        walk(top, 0)
    return {
        "format": arc.fmt,
        "message": q.localname,
        "version": version_of_namespace(q.namespace),
        "message_identifier": t("s:MessageIdentifier"),
        "date": t("s:Date"),
        "comments": [" ".join(c.text.split()) for c in root.iterfind("s:Comment", ns) if c.text],
        "archival_agreement": t("s:ArchivalAgreement"),
        "archival_profile": t("s:DataObjectPackage/s:ManagementMetadata/s:ArchivalProfile"),
        "originating_agency": t("s:DataObjectPackage/s:ManagementMetadata/s:OriginatingAgencyIdentifier"),
        "archival_agency": t("s:ArchivalAgency/s:Identifier"),
        "transferring_agency": t("s:TransferringAgency/s:Identifier"),
        "units": units,
        "objects": objects,
        "files": [{"name": e.name, "size": e.size} for e in arc.entries.values()],
        "total_size": sum(e.size for e in arc.entries.values()),
        "warnings": [f.to_text() for f in arc.findings],
    }
