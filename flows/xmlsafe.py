"""Hardened XML parsing: no DTD, no entity expansion, no network, bounded size.

Every XML that enters demat comes from outside (agents, the State, archive systems), so every
parse goes through here. A DOCTYPE is refused outright: none of the formats we read has one.
"""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

DEFAULT_MAX_BYTES = 200 * 1024 * 1024

_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
# What every parser and iterparse here turns off, declared once.
_HARDENED = {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": False}


class UnsafeXML(ValueError):
    """The XML carries a construct demat refuses (DOCTYPE, entities) or exceeds the size cap."""


def parser(**overrides) -> etree.XMLParser:
    return etree.XMLParser(**{**_HARDENED, "dtd_validation": False, "remove_blank_text": False, **overrides})


def check_prolog(head: bytes) -> None:
    """Refuse a DOCTYPE in the first bytes of a document (where it must appear)."""
    if _DOCTYPE.search(head):
        raise UnsafeXML(
            "Le fichier contient une déclaration DOCTYPE (DTD ou entités) : refusée pour des raisons de sécurité."
        )


def parse_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    if len(data) > max_bytes:
        raise UnsafeXML(f"Le document XML dépasse la taille maximale autorisée ({max_bytes} octets).")
    check_prolog(data[:65536])
    return etree.fromstring(data, parser())


def parse_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise UnsafeXML(f"Le document XML dépasse la taille maximale autorisée ({max_bytes} octets).")
    return parse_bytes(path.read_bytes(), max_bytes=max_bytes)


def iterparse(source, *, events=("end",), tag=None, max_bytes: int = DEFAULT_MAX_BYTES):
    """A hardened lxml iterparse over a path or a binary file object."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.stat().st_size > max_bytes:
            raise UnsafeXML(f"Le document XML dépasse la taille maximale autorisée ({max_bytes} octets).")
        with path.open("rb") as fh:
            check_prolog(fh.read(65536))
    return hardened_iterparse(source, events=events, tag=tag)


def hardened_iterparse(source, *, events=("end",), tag=None, schema: etree.XMLSchema | None = None):
    """lxml iterparse with entities, DTD loading, network and huge trees off, and no size or prolog
    check: for callers that make those checks themselves (the PES validator reports them as findings)."""
    return etree.iterparse(str(source) if isinstance(source, Path) else source, events=events, tag=tag, schema=schema,
                           **_HARDENED)


def schema_from_file(path: str | Path, *, url_map: dict[str, Path] | None = None) -> etree.XMLSchema:
    """Load an XSD offline. url_map maps remote schemaLocation URLs to local files."""
    p = parser()
    if url_map:

        class _Resolver(etree.Resolver):
            def resolve(self, url, pubid, context):
                target = url_map.get(url)
                if target is not None:
                    return self.resolve_filename(str(target), context)
                return None

        p.resolvers.add(_Resolver())
    doc = etree.parse(str(path), p)
    return etree.XMLSchema(doc)
