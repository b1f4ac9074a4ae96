"""Digest algorithm spellings, MIME types, PRONOM identifiers and package-safe file names.

Archive systems disagree on how to spell a digest algorithm in `MessageDigest/@algorithm`
("SHA-512" for Vitam, "http://www.w3.org/2001/04/xmlenc#sha256" for as@lae / Pastell): the
spelling is a setting, and this table maps every accepted spelling to a hashlib name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

# spelling -> hashlib name. Normalised lookup (upper case, no '-', '_' or spaces) also accepted.
DIGEST_ALGORITHMS: dict[str, str] = {
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
    "http://www.w3.org/2001/04/xmldsig-more#sha512": "sha512",
}
# Readable in packages we check, never written: too weak for long-term archiving.
WEAK_DIGEST_ALGORITHMS: dict[str, str] = {
    "SHA-1": "sha1",
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "MD5": "md5",
}
URI_SPELLING = {"sha256": "http://www.w3.org/2001/04/xmlenc#sha256", "sha512": "http://www.w3.org/2001/04/xmlenc#sha512"}


class UnknownDigestAlgorithm(ValueError):
    """The digest algorithm spelling is not in the table (message in French)."""


def _norm(spelling: str) -> str:
    return re.sub(r"[\s_-]", "", spelling).upper()


_NORMALISED = {_norm(k): v for k, v in {**DIGEST_ALGORITHMS, **WEAK_DIGEST_ALGORITHMS}.items()}


def hash_name(spelling: str, *, allow_weak: bool = False) -> str:
    """The hashlib name for a `MessageDigest/@algorithm` spelling."""
    s = (spelling or "").strip()
    name = DIGEST_ALGORITHMS.get(s) or (WEAK_DIGEST_ALGORITHMS.get(s) if allow_weak else None)
    if name is None:
        name = _NORMALISED.get(_norm(s))
        if name in ("sha1", "md5") and not allow_weak:
            name = None
    if name is None:
        known = ", ".join(DIGEST_ALGORITHMS)
        raise UnknownDigestAlgorithm(f"algorithme d'empreinte « {spelling} » inconnu (acceptés : {known})")
    return name


def new_hash(spelling: str, *, allow_weak: bool = False):
    return hashlib.new(hash_name(spelling, allow_weak=allow_weak))


@dataclass(frozen=True)
class FormatInfo:
    mime: str
    pronom: str | None
    label: str | None = None


_PDF_VERSIONS = {
    "1.0": "fmt/14", "1.1": "fmt/15", "1.2": "fmt/16", "1.3": "fmt/17", "1.4": "fmt/18",
    "1.5": "fmt/19", "1.6": "fmt/20", "1.7": "fmt/276", "2.0": "fmt/1129",
}
_PDFA = {
    ("1", "A"): "fmt/95", ("1", "B"): "fmt/354",
    ("2", "A"): "fmt/476", ("2", "B"): "fmt/477", ("2", "U"): "fmt/478",
    ("3", "A"): "fmt/479", ("3", "B"): "fmt/480", ("3", "U"): "fmt/481",
}
PRONOM_LABELS = {
    **{v: f"Acrobat PDF {k} - Portable Document Format" for k, v in _PDF_VERSIONS.items()},
    **{v: f"Acrobat PDF/A-{p}{c.lower()} - Portable Document Format" for (p, c), v in _PDFA.items()},
    "fmt/101": "Extensible Markup Language 1.0",
    "fmt/817": "JSON Data Interchange Format",
    "x-fmt/111": "Plain Text File",
    "x-fmt/18": "Comma Separated Values",
    "fmt/471": "Hypertext Markup Language 5",
    "fmt/96": "Hypertext Markup Language",
    "x-fmt/263": "ZIP Format",
    "x-fmt/265": "Tape Archive Format",
    "x-fmt/266": "GZIP Format",
    "fmt/13": "Portable Network Graphics 1.2",
    "fmt/43": "JPEG File Interchange Format 1.01",
}
_BY_EXT: dict[str, tuple[str, str | None]] = {
    ".pdf": ("application/pdf", None),
    ".xml": ("application/xml", "fmt/101"),
    ".json": ("application/json", "fmt/817"),
    ".txt": ("text/plain", "x-fmt/111"),
    ".csv": ("text/csv", "x-fmt/18"),
    ".html": ("text/html", "fmt/471"),
    ".htm": ("text/html", "fmt/96"),
    ".zip": ("application/zip", "x-fmt/263"),
    ".tar": ("application/x-tar", "x-fmt/265"),
    ".gz": ("application/gzip", "x-fmt/266"),
    ".tgz": ("application/gzip", "x-fmt/266"),
    ".png": ("image/png", "fmt/13"),
    ".jpg": ("image/jpeg", "fmt/43"),
    ".jpeg": ("image/jpeg", "fmt/43"),
    ".p7s": ("application/pkcs7-signature", None),
    ".sig": ("application/pkcs7-signature", None),
    ".odt": ("application/vnd.oasis.opendocument.text", None),
}

_PDF_HEADER = re.compile(rb"%PDF-(\d\.\d)")
_PDFA_PART = re.compile(rb"pdfaid:part(?:>|=\")\s*([123])")
_PDFA_CONF = re.compile(rb"pdfaid:conformance(?:>|=\")\s*([ABUabu])")


class FormatSniffer:
    """Guess MIME type and PRONOM id while the bytes stream by (PDF/A XMP can be anywhere)."""

    def __init__(self, name: str):
        self.ext = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
        self.head = b""
        self._tail = b""
        self.pdfa_part: str | None = None
        self.pdfa_conf: str | None = None

    def update(self, chunk: bytes) -> None:
        if len(self.head) < 1024:
            self.head += chunk[: 1024 - len(self.head)]
        if (self.ext == ".pdf" or self.head.startswith(b"%PDF-")) and (self.pdfa_part is None or self.pdfa_conf is None):
            if b"pdfaid:" in chunk:
                self._scan(self._tail + chunk)
            elif b"pdfaid:" in self._tail + chunk[:300]:
                self._scan(self._tail + chunk[:4096])
            self._tail = chunk[-300:]

    def _scan(self, data: bytes) -> None:
        m = _PDFA_PART.search(data)
        if m and self.pdfa_part is None:
            self.pdfa_part = m.group(1).decode()
        c = _PDFA_CONF.search(data)
        if c and self.pdfa_conf is None:
            self.pdfa_conf = c.group(1).decode().upper()

    def result(self) -> FormatInfo:
        head = self.head
        if head.startswith(b"%PDF-") or self.ext == ".pdf":
            pronom = None
            if self.pdfa_part:
                pronom = _PDFA.get((self.pdfa_part, self.pdfa_conf or "B"))
            if pronom is None:
                m = _PDF_HEADER.match(head)
                pronom = _PDF_VERSIONS.get(m.group(1).decode()) if m else None
            return FormatInfo("application/pdf", pronom, PRONOM_LABELS.get(pronom or ""))
        if self.ext in _BY_EXT:
            mime, pronom = _BY_EXT[self.ext]
            return FormatInfo(mime, pronom, PRONOM_LABELS.get(pronom or ""))
        stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if stripped.startswith(b"<?xml") or stripped.startswith(b"<"):
            return FormatInfo("application/xml", "fmt/101", PRONOM_LABELS["fmt/101"])
        if stripped[:1] in (b"{", b"["):
            return FormatInfo("application/json", "fmt/817", PRONOM_LABELS["fmt/817"])
        if head.startswith(b"PK\x03\x04"):
            return FormatInfo("application/zip", "x-fmt/263", PRONOM_LABELS["x-fmt/263"])
        if head.startswith(b"\x1f\x8b"):
            return FormatInfo("application/gzip", "x-fmt/266", PRONOM_LABELS["x-fmt/266"])
        return FormatInfo("application/octet-stream", None, None)


def guess_format(name: str, data: bytes) -> FormatInfo:
    s = FormatSniffer(name)
    s.update(data)
    return s.result()


# --- file names -------------------------------------------------------------------------------

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o", "Ø": "O", "đ": "d", "ł": "l"})


def strip_accents(text: str) -> str:
    nfkd = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(c for c in nfkd if not unicodedata.combining(c))


def name_key(name: str) -> str:
    """Comparison key of a file name: accents removed, case folded (NFC/NFD-insensitive)."""
    return unicodedata.normalize("NFC", strip_accents(name)).casefold()


def safe_name(name: str, *, max_length: int = 90) -> str:
    """A portable package name: ASCII letters, digits, '.', '_' and '-' only, extension kept."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    ascii_ = strip_accents(base).encode("ascii", "ignore").decode("ascii")
    ascii_ = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_).strip("._-") or "fichier"
    stem, dot, ext = ascii_.rpartition(".")
    if not dot or not stem:
        stem, ext = ascii_, ""
    ext = ext[:10]
    stem = stem[: max_length - len(ext) - 1] if ext else stem[:max_length]
    return f"{stem}.{ext}" if ext else stem


def unique_names(names: list[str]) -> list[str]:
    """Safe names, unique ignoring accents and case; collisions get a suffix (_2, _3, ...)."""
    used: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate = safe_name(name)
        if name_key(candidate) in used:
            stem, dot, ext = candidate.rpartition(".")
            if not dot or not stem:
                stem, ext = candidate, ""
            i = 2
            while True:
                candidate = f"{stem}_{i}.{ext}" if ext else f"{stem}_{i}"
                if name_key(candidate) not in used:
                    break
                i += 1
        used.add(name_key(candidate))
        out.append(candidate)
    return out
