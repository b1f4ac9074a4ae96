"""XML helpers for @ctes: qualified names, ISO-8859-1 serialisation, schema validation.

Every parse goes through flows.xmlsafe; schemas are loaded once, offline.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

from flows import xmlsafe
from flows.actes.model import NS_ACTES, NS_INSEE, NSMAP

ROOT = Path(__file__).resolve().parents[2]
PROJECT_SCHEMA = ROOT / "schemas" / "actes" / "actes.xsd"
ENCODING = "ISO-8859-1"


def q(name: str) -> str:
    """Qualified name in the actes namespace (elements and attributes alike)."""
    return f"{{{NS_ACTES}}}{name}"


def qi(name: str) -> str:
    return f"{{{NS_INSEE}}}{name}"


def root(kind: str, **attrs: str) -> etree._Element:
    el = etree.Element(q(kind), nsmap={"actes": NSMAP["actes"], "insee": NSMAP["insee"]})
    for k, v in attrs.items():
        el.set(q(k), str(v))
    return el


def sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, q(name))
    for k, v in attrs.items():
        el.set(q(k), str(v))
    if text is not None:
        el.text = text
    return el


def to_bytes(el: etree._Element) -> bytes:
    return etree.tostring(el, xml_declaration=True, encoding=ENCODING, pretty_print=True)


def parse(data: bytes) -> etree._Element:
    return xmlsafe.parse_bytes(data)


@lru_cache(maxsize=4)
def load_schema(path: str) -> etree.XMLSchema:
    return xmlsafe.schema_from_file(path)


def project_schema() -> etree.XMLSchema:
    return load_schema(str(PROJECT_SCHEMA))


def schema_errors(doc: bytes | etree._Element, schema: etree.XMLSchema | None = None) -> list[str]:
    """French-prefixed list of XSD errors (empty when valid)."""
    schema = schema or project_schema()
    el = parse(doc) if isinstance(doc, bytes) else doc
    if schema.validate(el):
        return []
    return [f"ligne {e.line} : {e.message}" for e in schema.error_log]


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def attr(el: etree._Element | None, name: str, default: str = "") -> str:
    """An actes: attribute, tolerating an unqualified one (some tools forget the prefix)."""
    if el is None:
        return default
    value = el.get(q(name))
    if value is None:
        value = el.get(name)
    return value if value is not None else default


def child(el: etree._Element | None, name: str) -> etree._Element | None:
    if el is None:
        return None
    return el.find(q(name))


def text(el: etree._Element | None, name: str, default: str = "") -> str:
    c = child(el, name)
    return (c.text or "").strip() if c is not None and c.text is not None else default
