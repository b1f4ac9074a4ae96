"""Encoding checks on the raw bytes of a PES (streamed, constant memory).

Hélios expects ISO-8859-1. The classic accident is a file written in UTF-8 but declared
ISO-8859-1: it parses "fine" (every byte is a valid Latin-1 character) and the accents arrive
garbled (« Ã© » instead of « é »). lxml cannot see it, so we look at the bytes ourselves.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from flows.findings import Finding

CHUNK = 1024 * 1024
LATIN1_NAMES = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "iso_8859-1", "l1", "iso-ir-100", "cp819"}
UTF8_NAMES = {"utf-8", "utf8"}

_DECL = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")
_C1 = re.compile(rb"[\x80-\x9f]")
_NON_ASCII = re.compile(rb"[\x80-\xff]")
# bytes.translate(None, delete=...) runs in C at memory speed: it tells whether a chunk holds
# any byte of a class before we pay for a regex search.
_ALL_BUT_C1 = bytes(b for b in range(256) if not 0x80 <= b <= 0x9F)
_ASCII = bytes(range(0x80))


def declared_encoding(head: bytes) -> str | None:
    """The encoding named in the XML declaration (None when there is none)."""
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    m = _DECL.match(head)
    return m.group(1).decode("ascii").lower() if m else None


def _where(line: int, offset: int) -> str:
    return f"ligne {line}, octet {offset}"


def check_encoding(path: str | Path) -> tuple[str | None, list[Finding]]:
    """Return (declared encoding, findings). Reads the file once, chunk by chunk."""
    path = Path(path)
    findings: list[Finding] = []
    with path.open("rb") as fh:
        head = fh.read(4096)
        declared = declared_encoding(head)
        fh.seek(0)
        effective = declared or "utf-8"
        is_latin1 = effective in LATIN1_NAMES
        is_utf8 = effective in UTF8_NAMES
        if not is_latin1:
            findings.append(
                Finding(
                    rule="ENCODAGE-DECLARE",
                    message=(
                        f"Le fichier est déclaré en « {declared} »" if declared else "Le fichier n'a pas de déclaration XML d'encodage (UTF-8 implicite)"
                    )
                    + " alors que le PES est normalement en ISO-8859-1.",
                    fix='Produire le fichier en ISO-8859-1 avec la déclaration <?xml version="1.0" encoding="ISO-8859-1"?>.',
                    value=declared or "",
                    severity="warning",
                    layer="encodage",
                    line=1,
                )
            )
        decoder = codecs.getincrementaldecoder("utf-8")() if (is_latin1 or is_utf8) else None
        utf8_ok = True  # stays True while the bytes read so far are valid UTF-8
        first_non_ascii: tuple[int, int, bytes] | None = None
        first_c1: tuple[int, int, bytes] | None = None
        offset = 0
        lines_before = 0  # newlines seen in previous chunks
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            if first_non_ascii is None and chunk.translate(None, _ASCII):
                m = _NON_ASCII.search(chunk)
                if m:
                    pos = m.start()
                    first_non_ascii = (lines_before + chunk.count(b"\n", 0, pos) + 1, offset + pos, chunk[pos : pos + 4])
            if is_latin1 and first_c1 is None and chunk.translate(None, _ALL_BUT_C1):
                m = _C1.search(chunk)
                if m:
                    pos = m.start()
                    first_c1 = (lines_before + chunk.count(b"\n", 0, pos) + 1, offset + pos, chunk[pos : pos + 1])
            if decoder is not None and utf8_ok:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    utf8_ok = False
                    if is_utf8:
                        pos = exc.start
                        line = lines_before + chunk.count(b"\n", 0, pos) + 1
                        findings.append(
                            Finding(
                                rule="ENCODAGE",
                                message=(
                                    f"Octets invalides pour l'encodage déclaré ({declared or 'UTF-8'}) à la {_where(line, offset + pos)} :"
                                    " le fichier n'est pas en UTF-8 valide (probablement de l'ISO-8859-1 mal déclaré)."
                                ),
                                fix='Déclarer encoding="ISO-8859-1" si le fichier est en Latin-1, ou le réencoder correctement.',
                                value=chunk[pos : pos + 4].hex(" "),
                                layer="encodage",
                                line=line,
                            )
                        )
            offset += len(chunk)
            lines_before += chunk.count(b"\n")
            if (not utf8_ok or decoder is None) and first_non_ascii is not None and (first_c1 is not None or not is_latin1):
                break  # nothing more to learn
        if decoder is not None and utf8_ok:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8_ok = False
    if is_latin1 and utf8_ok and first_non_ascii is not None:
        line, off, sample = first_non_ascii
        try:
            as_utf8 = sample.decode("utf-8", errors="ignore")[:1]
        except UnicodeDecodeError:  # pragma: no cover - errors="ignore"
            as_utf8 = ""
        as_latin1 = sample[: len(as_utf8.encode("utf-8")) or 2].decode("latin-1")
        findings.append(
            Finding(
                rule="ENCODAGE",
                message=(
                    f"Le fichier est déclaré en {declared} mais son contenu est en UTF-8 (premier caractère accentué"
                    f" à la {_where(line, off)}) : Hélios lirait « {as_latin1} » au lieu de « {as_utf8} »."
                ),
                fix="Réencoder le fichier en ISO-8859-1 (sans changer la déclaration), ou corriger le logiciel qui l'a produit.",
                value=sample.hex(" "),
                layer="encodage",
                line=line,
            )
        )
    if is_latin1 and first_c1 is not None and not (utf8_ok and first_non_ascii is not None):
        line, off, sample = first_c1
        findings.append(
            Finding(
                rule="ENCODAGE-CONTROLE",
                message=(
                    f"Caractère de contrôle C1 (0x{sample.hex()}) à la {_where(line, off)} : probablement du"
                    " Windows-1252 (€, apostrophe typographique…) déclaré ISO-8859-1."
                ),
                fix="Remplacer ces caractères (apostrophe droite ', « EUR » pour €) avant l'envoi.",
                value=sample.hex(),
                severity="warning",
                layer="encodage",
                line=line,
            )
        )
    return declared, findings
