"""The schemas a counterpart judges with: the official ones when a reference directory is there.

Where: $DEMAT_REFERENCE_DIR (the tests set it to ../shared/reference, which CI has beside the
checkout; nothing at run time looks there by itself). Without one (a user's clone), the schemas written for this project (schemas/pes,
schemas/actes, schemas/seda: tests prove them equivalent to the official ones) stand in, and
the start-up log says so (`describe()`). Nothing here judges: it only finds and compiles XSDs,
offline (no network, no entities), once per process.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from flows import xmlsafe

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PROJECT_SCHEMAS = REPO / "schemas"
PES_OFFICIAL = Path("helios") / "schemas" / "schemas_pes_v5.30" / "PES_V2" / "Rev0" / "PES_Aller.xsd"
ACTES_OFFICIAL = Path("actes") / "schemas" / "actesv1_1.xsd"
SEDA_W3C = {
    "http://www.w3.org/2001/xml.xsd": "xml.xsd",
    "https://www.w3.org/2001/xml.xsd": "xml.xsd",
    "http://www.w3.org/1999/xlink.xsd": "xlink.xsd",
    "https://www.w3.org/1999/xlink.xsd": "xlink.xsd",
}
_LOCK = threading.Lock()


class SchemaMissing(RuntimeError):
    """No schema at all for a kind of message (French message)."""


@dataclass(frozen=True)
class Located:
    path: Path
    official: bool
    url_map: tuple[tuple[str, str], ...] = ()

    def label(self) -> str:
        return f"{'officiel' if self.official else 'du projet'} ({self.path})"


def reference_dir() -> Path | None:
    """$DEMAT_REFERENCE_DIR when set to a folder, else None: nothing at run time looks for ../shared
    (a user's clone has none); the tests name it explicitly."""
    env = os.environ.get("DEMAT_REFERENCE_DIR")
    return Path(env).resolve() if env and Path(env).is_dir() else None


def _project_seda(version: str) -> Path | None:
    base = PROJECT_SCHEMAS / "seda"
    for name in (f"seda-{version}-main.xsd", f"seda-{version}.xsd", f"{version}/seda-{version}-main.xsd"):
        if (base / name).is_file():
            return base / name
    return None


def locate(kind: str, version: str = "2.2") -> Located:
    """kind: "pes", "actes" or "seda" (with its version)."""
    ref = reference_dir()
    if kind == "pes":
        if ref is not None and (ref / PES_OFFICIAL).is_file():
            return Located(ref / PES_OFFICIAL, True)
        return Located(PROJECT_SCHEMAS / "pes" / "PES_Aller.xsd", False)
    if kind == "actes":
        if ref is not None and (ref / ACTES_OFFICIAL).is_file():
            return Located(ref / ACTES_OFFICIAL, True)
        return Located(PROJECT_SCHEMAS / "actes" / "actes.xsd", False)
    if kind == "seda":
        if ref is not None:
            main = ref / "seda" / "schemas" / f"seda-{version}" / f"seda-{version}-main.xsd"
            w3c = ref / "seda" / "w3c"
            if main.is_file() and w3c.is_dir():
                return Located(main, True, tuple((u, str(w3c / n)) for u, n in SEDA_W3C.items()))
        project = _project_seda(version)
        if project is not None:
            w3c = project.parent
            return Located(project, False, tuple((u, str(w3c / n)) for u, n in SEDA_W3C.items() if (w3c / n).is_file()))
        raise SchemaMissing(f"aucun schéma SEDA {version} : ni dossier de référence (DEMAT_REFERENCE_DIR), "
                            f"ni schéma du projet sous {PROJECT_SCHEMAS / 'seda'}")
    raise ValueError(kind)


@functools.lru_cache(maxsize=8)
def _compile(located: Located) -> etree.XMLSchema:
    return xmlsafe.schema_from_file(located.path, url_map={u: Path(p) for u, p in located.url_map} or None)


def schema(kind: str, version: str = "2.2") -> tuple[etree.XMLSchema, Located]:
    located = locate(kind, version)
    with _LOCK:
        return _compile(located), located


def errors(kind: str, doc: etree._Element, *, version: str = "2.2", limit: int = 10) -> list[str]:
    """Schema errors of a parsed document, as 'ligne N : message' (empty when valid)."""
    xsd, _ = schema(kind, version)
    if xsd.validate(doc):
        return []
    return [f"ligne {e.line} : {e.message}" for e in list(xsd.error_log)[:limit]]


def describe() -> str:
    """One French line per schema, for the start-up log: which one each counterpart judges with."""
    parts = []
    for kind, what in (("pes", "DGFiP (PES_Aller)"), ("actes", "préfecture (@ctes)"), ("seda", "SAE (SEDA 2.2)")):
        try:
            parts.append(f"{what} : schéma {locate(kind).label()}")
        except SchemaMissing as exc:
            parts.append(f"{what} : {exc}")
    return " ; ".join(parts)
