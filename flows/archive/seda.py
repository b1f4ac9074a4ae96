"""SEDA 2.1 / 2.2 / 2.3 ArchiveTransfer packages for the archive system (SAE).

A package is a tar.gz (or zip) with `manifest.xml` (the ArchiveTransfer bordereau) at the root and
the files under `Content/`. Building it twice from the same dossier gives the same bytes (fixed
order, mtimes, owners and gzip header): a retried deposit is recognised as the same transfer.

Files are read twice, in chunks, never held whole: a first pass computes digests, sizes and formats
(the bordereau needs them), a second pass copies them into the archive and checks that they did
not change in between. `build_package_to` writes to a path; `build_package` returns bytes.

Names inside the package are ASCII-safe and unique ignoring accents and case ("Annexé.pdf" and
"annexe.PDF" become "Annexe.pdf" and "annexe_2.PDF"); the original name stays in
FileInfo/Filename. The MessageIdentifier is "DEMAT-<dossier>-<12 hex of sha256(bordereau)>".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import IO, Literal

from lxml import etree

from flows.archive.formats import PRONOM_LABELS, FormatSniffer, hash_name, unique_names
from flows.archive.schemas import check_version, seda_namespace
from flows.config.models import ArchiveProfile

Role = Literal["document", "annexe", "signature", "acquittement", "courrier", "journal", "rapport"]
ROLE_LABELS: dict[str, str] = {
    "document": "Document principal",
    "annexe": "Annexe",
    "signature": "Signature électronique",
    "acquittement": "Accusé de réception",
    "courrier": "Courrier",
    "journal": "Journal des opérations",
    "rapport": "Rapport",
}
DOC_TYPE_LABELS: dict[str, str] = {
    "deliberation": "Délibération",
    "arrete": "Arrêté",
    "contrat": "Contrat, convention",
    "budget": "Document budgétaire",
    "autre": "Autre acte",
    "pes_depense": "Flux comptable PES V2 (dépenses)",
    "pes_recette": "Flux comptable PES V2 (recettes)",
    "pes": "Flux comptable PES V2",
}
FLOW_LABELS = {"actes": "Actes soumis au contrôle de légalité", "helios": "Flux comptables Hélios (PES V2)"}
FORMATS = ("tar.gz", "zip")
CHUNK = 1024 * 1024
GZIP_LEVEL = 6  # the level of `gzip`/`tar czf`: level 9 costs twice the time for ~1 % on PDFs


class PackageError(ValueError):
    """The archive request cannot be packaged (message in French)."""


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the dossier. `data` is the content (bytes) or a path (str or Path) read in chunks."""

    name: str
    data: bytes | Path | str
    role: Role = "document"
    mime: str | None = None  # guessed from content and extension when None
    pronom: str | None = None  # PRONOM id (fmt/354, fmt/18, fmt/101, ...); guessed when None
    date: datetime | date | None = None  # LastModified; the dossier dates when None
    title: str | None = None  # title of its archive unit; the file name when None

    def open(self) -> IO[bytes]:
        if isinstance(self.data, (bytes, bytearray, memoryview)):
            return io.BytesIO(self.data)
        return open(self.data, "rb")  # noqa: SIM115 - closed by the caller


@dataclass(frozen=True)
class ArchiveRequest:
    """What to archive for one dossier (an acte and its acknowledgments, or one PES and its acquit)."""

    dossier_id: str
    title: str
    flow: Literal["actes", "helios"]
    doc_type: str
    collectivite_name: str
    collectivite_siren: str  # OriginatingAgency identifier
    profile: ArchiveProfile
    start_date: date
    end_date: date
    files: list[ArchiveFile]
    archival_agency: str = "SAE-DEMO"
    transferring_agency: str = "DEMAT"
    keywords: list[str | tuple[str, str]] = field(default_factory=list)  # text or (text, KeywordType)
    comment: str = ""
    description: str = ""
    transfer_date: datetime | None = None  # bordereau Date; must be stable for a byte-identical rebuild


@dataclass(frozen=True)
class PackedObject:
    id: str
    unit_id: str
    name: str  # name in the package, under Content/
    original_name: str
    role: str
    size: int
    digest: str  # hex, with the package's algorithm
    mime: str
    pronom: str | None


class Package:
    """A built package. `.data` reads the file lazily when the package was written to a path."""

    def __init__(
        self,
        *,
        message_identifier: str,
        name: str,
        manifest: bytes,
        version: str,
        digest_algorithm: str,
        fmt: str,
        objects: list[PackedObject],
        sha256: str,
        size: int,
        data: bytes | None = None,
        path: Path | None = None,
    ):
        self.message_identifier = message_identifier
        self.name = name
        self.manifest = manifest
        self.version = version
        self.digest_algorithm = digest_algorithm
        self.fmt = fmt
        self.objects = objects
        self.sha256 = sha256
        self.size = size
        self.path = path
        self._data = data

    @property
    def data(self) -> bytes:
        if self._data is None:
            if self.path is None:
                raise ValueError("paquet sans contenu")
            return self.path.read_bytes()
        return self._data

    def __repr__(self) -> str:
        return f"Package({self.name!r}, {self.size} octets, SEDA {self.version})"


# --- helpers ------------------------------------------------------------------------------------


def options_from_config(config) -> dict[str, str]:
    """build_package keyword arguments from a PlatformConfig (seda_version, digest, format)."""
    return {"version": config.seda_version, "digest_algorithm": config.digest_algorithm, "fmt": config.package_format}


def _as_datetime(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(0), UTC)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _epoch(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return max(int(value.timestamp()), 0)


def _safe_token(text: str, max_length: int = 60) -> str:
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_).strip("-")[:max_length] or "dossier"


def _text(value: str) -> str:
    """Remove characters XML 1.0 cannot carry (control characters) from metadata text."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", unicodedata.normalize("NFC", value)).strip()


@dataclass
class _Scanned:
    file: ArchiveFile
    name: str
    size: int
    digest: str
    mime: str
    pronom: str | None
    label: str | None
    modified: datetime


def _scan(f: ArchiveFile, name: str, algo: str, default_date: datetime) -> _Scanned:
    h = hashlib.new(algo)
    sniffer = FormatSniffer(f.name)
    size = 0
    with f.open() as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            sniffer.update(chunk)
            size += len(chunk)
    guess = sniffer.result()
    pronom = f.pronom if f.pronom is not None else guess.pronom
    mime = f.mime or guess.mime
    label = PRONOM_LABELS.get(pronom or "")
    modified = _as_datetime(f.date) if f.date is not None else default_date
    return _Scanned(f, name, size, h.hexdigest(), mime, pronom or None, label, modified)


def _validate_request(request: ArchiveRequest, version: str, digest_algorithm: str, fmt: str) -> str:
    check_version(version)
    if fmt not in FORMATS:
        raise PackageError(f"format de paquet « {fmt} » inconnu (attendu : tar.gz ou zip)")
    try:
        algo = hash_name(digest_algorithm)
    except ValueError as exc:
        raise PackageError(str(exc)) from exc
    if not request.files:
        raise PackageError(f"dossier {request.dossier_id} : aucun fichier à archiver")
    if request.end_date < request.start_date:
        raise PackageError(
            f"dossier {request.dossier_id} : la date de fin ({request.end_date}) précède la date de début ({request.start_date})"
        )
    for f in request.files:
        if f.role not in ROLE_LABELS:
            raise PackageError(f"fichier « {f.name} » : rôle « {f.role} » inconnu (attendu : {', '.join(ROLE_LABELS)})")
        if not f.name.strip():
            raise PackageError("un fichier du dossier n'a pas de nom")
    for label, value in (
        ("titre", request.title),
        ("SIREN de la collectivité", request.collectivite_siren),
        ("service d'archives", request.archival_agency),
        ("service versant", request.transferring_agency),
    ):
        if not _text(value):
            raise PackageError(f"dossier {request.dossier_id} : {label} manquant")
    return algo


# --- the bordereau ------------------------------------------------------------------------------


def _manifest(
    request: ArchiveRequest, scanned: list[_Scanned], version: str, spelling: str, transfer_date: datetime
) -> tuple[etree._Element, etree._Element]:
    ns = seda_namespace(version)

    def el(parent: etree._Element | None, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        e = etree.Element(f"{{{ns}}}{tag}", nsmap={None: ns}) if parent is None else etree.SubElement(parent, f"{{{ns}}}{tag}")
        for k, v in attrs.items():
            e.set(k, v)
        if text is not None:
            e.text = text
        return e

    profile = request.profile
    root = el(None, "ArchiveTransfer")
    comment = _text(request.comment) or (
        f"Versement du dossier {request.dossier_id} ({FLOW_LABELS.get(request.flow, request.flow)}) "
        f"de {_text(request.collectivite_name)}"
    )
    el(root, "Comment", comment)
    el(root, "Date", _iso(transfer_date))
    msgid = el(root, "MessageIdentifier", "")
    if profile.archival_agreement:
        el(root, "ArchivalAgreement", profile.archival_agreement)
    clv = el(root, "CodeListVersions")
    for tag in (
        "ReplyCodeListVersion",
        "MessageDigestAlgorithmCodeListVersion",
        "MimeTypeCodeListVersion",
        "FileFormatCodeListVersion",
        "DataObjectVersionCodeListVersion",
        "AppraisalRuleCodeListVersion",
        "AccessRuleCodeListVersion",
    ):
        el(clv, tag, f"{tag}0")
    pkg = el(root, "DataObjectPackage")
    for i, s in enumerate(scanned, 1):
        bdo = el(pkg, "BinaryDataObject", id=f"BDO_{i:03d}")
        el(bdo, "DataObjectVersion", "BinaryMaster_1")
        if version == "2.3":
            el(bdo, "DataObjectUse", "BinaryMaster")
            el(bdo, "DataObjectNumber", "1")
        el(bdo, "Uri", f"Content/{s.name}")
        el(bdo, "MessageDigest", s.digest, algorithm=spelling)
        if s.size > 0:  # SizeInBytesType is a positiveInteger: an empty file has no Size
            el(bdo, "Size", str(s.size))
        fi = el(bdo, "FormatIdentification")
        if s.label:
            el(fi, "FormatLitteral", s.label)
        el(fi, "MimeType", s.mime)
        if s.pronom:
            el(fi, "FormatId", s.pronom)
        info = el(bdo, "FileInfo")
        el(info, "Filename", _text(s.file.name) or s.name)
        el(info, "LastModified", _iso(s.modified))

    desc = el(pkg, "DescriptiveMetadata")
    top = el(desc, "ArchiveUnit", id="AU_DOSSIER")
    content = el(top, "Content")
    el(content, "DescriptionLevel", "RecordGrp")
    el(content, "Title", _text(request.title))
    el(content, "OriginatingAgencyArchiveUnitIdentifier", _text(request.dossier_id))
    description = _text(request.description) or (
        f"{DOC_TYPE_LABELS.get(request.doc_type, request.doc_type)} de {_text(request.collectivite_name)} "
        f"(SIREN {request.collectivite_siren}), dossier {request.dossier_id}"
    )
    el(content, "Description", description)
    el(content, "DocumentType", DOC_TYPE_LABELS.get(request.doc_type, request.doc_type))
    el(content, "Language", "fra")
    el(content, "DescriptionLanguage", "fra")
    keywords: list[tuple[str, str]] = [
        (_text(request.collectivite_name), "corpname"),
        (FLOW_LABELS.get(request.flow, request.flow), "subject"),
        (DOC_TYPE_LABELS.get(request.doc_type, request.doc_type), "genreform"),
    ]
    for k in request.keywords:
        text, ktype = (k, "subject") if isinstance(k, str) else k
        if _text(text) and (_text(text), ktype) not in keywords:
            keywords.append((_text(text), ktype))
    for text, ktype in keywords:
        if not text:
            continue
        kw = el(content, "Keyword")
        el(kw, "KeywordContent", text)
        el(kw, "KeywordType", ktype)
    oa = el(content, "OriginatingAgency")
    el(oa, "Identifier", request.collectivite_siren)
    sa = el(content, "SubmissionAgency")
    el(sa, "Identifier", request.transferring_agency)
    el(content, "StartDate", request.start_date.isoformat())
    el(content, "EndDate", request.end_date.isoformat())

    signed_unit = next((f"AU_{i:03d}" for i, s in enumerate(scanned, 1) if s.file.role == "document"), None)
    has_signature = any(s.file.role == "signature" for s in scanned)
    for i, s in enumerate(scanned, 1):
        unit = el(top, "ArchiveUnit", id=f"AU_{i:03d}")
        c = el(unit, "Content")
        el(c, "DescriptionLevel", "Item")
        el(c, "Title", _text(s.file.title or s.file.name) or s.name)
        el(c, "Description", f"{ROLE_LABELS[s.file.role]} : {_text(s.file.name)}")
        el(c, "DocumentType", ROLE_LABELS[s.file.role])
        day = s.modified.date() if s.file.date is not None else None
        el(c, "StartDate", (day or request.start_date).isoformat())
        el(c, "EndDate", (day or request.end_date).isoformat())
        if version == "2.3" and has_signature and signed_unit:
            # SEDA 2.3 SigningInformation: the signed document and its detached signature(s).
            if s.file.role == "signature":
                si = el(c, "SigningInformation")
                el(si, "SigningRole", "Signature")
                el(si, "SignedDocumentReferenceId", signed_unit)
            elif f"AU_{i:03d}" == signed_unit:
                si = el(c, "SigningInformation")
                el(si, "SigningRole", "SignedDocument")
                el(si, "DetachedSigningRole", "Signature")
        ref = el(unit, "DataObjectReference")
        el(ref, "DataObjectReferenceId", f"BDO_{i:03d}")

    mm = el(pkg, "ManagementMetadata")
    if profile.archival_profile:
        el(mm, "ArchivalProfile", profile.archival_profile)
    el(mm, "LegalStatus", "Public Archive")
    el(mm, "OriginatingAgencyIdentifier", request.collectivite_siren)
    el(mm, "SubmissionAgencyIdentifier", request.transferring_agency)
    ar = el(mm, "AppraisalRule")
    el(ar, "Rule", profile.appraisal_rule or f"P{profile.dua_years}Y")
    el(ar, "StartDate", request.end_date.isoformat())
    el(ar, "FinalAction", profile.final_action)
    acc = el(mm, "AccessRule")
    el(acc, "Rule", profile.access_rule)
    el(acc, "StartDate", request.end_date.isoformat())

    aa = el(root, "ArchivalAgency")
    el(aa, "Identifier", request.archival_agency)
    ta = el(root, "TransferringAgency")
    el(ta, "Identifier", request.transferring_agency)
    return root, msgid


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- writing the archive ------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what goes to the output so the package's own sha256 comes for free."""

    def __init__(self, out: IO[bytes]):
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)


class _CheckingReader(io.RawIOBase):
    """Re-hashes a file during the copy: a file changed since the first pass is refused."""

    def __init__(self, fh: IO[bytes], algo: str):
        self.fh = fh
        self.h = hashlib.new(algo)
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.h.update(data)
        self.size += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _open_checked(s: _Scanned, algo: str) -> _CheckingReader:
    return _CheckingReader(s.file.open(), algo)


def _verify(s: _Scanned, reader: _CheckingReader) -> None:
    reader.fh.close()
    if reader.size != s.size or reader.h.hexdigest() != s.digest:
        raise PackageError(f"le fichier « {s.file.name} » a changé pendant la construction du paquet : recommencez")


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = mtime
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def _write_tar_gz(out: IO[bytes], manifest: bytes, scanned: list[_Scanned], algo: str, mtime: int) -> None:
    # gzip header without file name and with a fixed mtime: byte-identical rebuilds
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=mtime) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.copybufsize = CHUNK
            tar.addfile(_tarinfo("manifest.xml", len(manifest), mtime), io.BytesIO(manifest))
            for s in scanned:
                reader = _open_checked(s, algo)
                try:
                    tar.addfile(_tarinfo(f"Content/{s.name}", s.size, _epoch(s.modified)), reader)
                except OSError as exc:  # shorter than at the first pass
                    reader.fh.close()
                    raise PackageError(
                        f"le fichier « {s.file.name} » a changé pendant la construction du paquet : recommencez"
                    ) from exc
                _verify(s, reader)


def _zip_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    d = datetime.fromtimestamp(max(epoch, 315532800), UTC)  # zip cannot store dates before 1980
    return (d.year, d.month, d.day, d.hour, d.minute, d.second - d.second % 2)


def _zipinfo(name: str, size: int, mtime: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=_zip_time(mtime))
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.create_system = 3
    zi.external_attr = 0o100644 << 16
    zi.file_size = size
    return zi


def _write_zip(out: IO[bytes], manifest: bytes, scanned: list[_Scanned], algo: str, mtime: int) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=GZIP_LEVEL) as zf:
        with zf.open(_zipinfo("manifest.xml", len(manifest), mtime), "w") as dst:
            dst.write(manifest)
        for s in scanned:
            reader = _open_checked(s, algo)
            with zf.open(_zipinfo(f"Content/{s.name}", s.size, _epoch(s.modified)), "w", force_zip64=s.size > 2**31 - 1) as dst:
                while chunk := reader.read(CHUNK):
                    dst.write(chunk)
            _verify(s, reader)


# --- public API ---------------------------------------------------------------------------------


@dataclass
class _Prepared:
    manifest: bytes
    message_identifier: str
    name: str
    scanned: list[_Scanned]
    algo: str
    mtime: int
    objects: list[PackedObject]
    version: str
    digest_algorithm: str
    fmt: str

    def package(self, hw: _HashingWriter, *, data: bytes | None = None, path: Path | None = None) -> Package:
        """The Package once written (in memory or at `path`), hashed as it went out."""
        return Package(message_identifier=self.message_identifier, name=self.name, manifest=self.manifest,
                       version=self.version, digest_algorithm=self.digest_algorithm, fmt=self.fmt,
                       objects=self.objects, sha256=hw.sha.hexdigest(), size=hw.size, data=data, path=path)


def _prepare(request: ArchiveRequest, version: str, digest_algorithm: str, fmt: str) -> _Prepared:
    algo = _validate_request(request, version, digest_algorithm, fmt)
    end_dt = datetime.combine(request.end_date, time(0), UTC)
    names = unique_names([f.name for f in request.files])
    scanned = [_scan(f, n, algo, request.transfer_date or end_dt) for f, n in zip(request.files, names, strict=True)]
    if request.transfer_date is not None:
        transfer_date = request.transfer_date
    else:  # stable by construction: the latest date the dossier carries
        transfer_date = max([end_dt, *(s.modified if s.modified.tzinfo else s.modified.replace(tzinfo=UTC) for s in scanned)])
    root, msgid_el = _manifest(request, scanned, version, digest_algorithm, transfer_date)
    digest = hashlib.sha256(_serialize(root) + fmt.encode()).hexdigest()[:12]
    message_identifier = f"DEMAT-{_safe_token(request.dossier_id)}-{digest}"
    msgid_el.text = message_identifier
    manifest = _serialize(root)
    objects = [
        PackedObject(
            id=f"BDO_{i:03d}",
            unit_id=f"AU_{i:03d}",
            name=s.name,
            original_name=s.file.name,
            role=s.file.role,
            size=s.size,
            digest=s.digest,
            mime=s.mime,
            pronom=s.pronom,
        )
        for i, s in enumerate(scanned, 1)
    ]
    return _Prepared(manifest, message_identifier, f"{message_identifier}.{fmt}", scanned, algo, _epoch(transfer_date),
                     objects, version, digest_algorithm, fmt)


def _write(prep: _Prepared, out: IO[bytes]) -> _HashingWriter:
    hw = _HashingWriter(out)
    if prep.fmt == "zip":
        _write_zip(hw, prep.manifest, prep.scanned, prep.algo, prep.mtime)
    else:
        _write_tar_gz(hw, prep.manifest, prep.scanned, prep.algo, prep.mtime)
    return hw


def build_package(
    request: ArchiveRequest, *, version: str = "2.2", digest_algorithm: str = "SHA-512", fmt: str = "tar.gz"
) -> Package:
    """Build the package in memory (dossiers of a few MB). For large dossiers use build_package_to."""
    prep = _prepare(request, version, digest_algorithm, fmt)
    buf = io.BytesIO()
    hw = _write(prep, buf)
    return prep.package(hw, data=buf.getvalue())


def build_package_to(
    path: str | Path,
    request: ArchiveRequest,
    *,
    version: str = "2.2",
    digest_algorithm: str = "SHA-512",
    fmt: str = "tar.gz",
) -> Package:
    """Build the package straight into `path` (a file, or a directory: then named after the message).

    Written under a temporary name then renamed: a crash never leaves a half package under the
    final name. Memory stays at a few MB whatever the dossier size.
    """
    prep = _prepare(request, version, digest_algorithm, fmt)
    target = Path(path)
    if target.is_dir():
        target = target / prep.name
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            hw = _write(prep, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return prep.package(hw, path=target)
