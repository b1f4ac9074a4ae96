"""Official SEDA 2.1 / 2.2 / 2.3 schemas, loaded offline, and bordereau validation.

The official `seda-2.N-main.xsd` imports xml.xsd and xlink.xsd by http URL: an lxml resolver maps
those URLs to the local W3C copies so that validation never touches the network. The schemas are
read from the reference directory (never copied into the repository) and cached per process.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding

VERSIONS = ("2.1", "2.2", "2.3")
NS_PREFIX = "fr:gouv:culture:archivesdefrance:seda:v"

W3C_URLS = {
    "http://www.w3.org/2001/xml.xsd": "xml.xsd",
    "https://www.w3.org/2001/xml.xsd": "xml.xsd",
    "http://www.w3.org/1999/xlink.xsd": "xlink.xsd",
    "https://www.w3.org/1999/xlink.xsd": "xlink.xsd",
}

_LOCK = threading.Lock()


class SchemaUnavailable(RuntimeError):
    """The official SEDA schema files cannot be found or loaded (message in French)."""


def seda_namespace(version: str) -> str:
    check_version(version)
    return NS_PREFIX + version


def check_version(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"version SEDA « {version} » non prise en charge (attendu : {', '.join(VERSIONS)})")
    return version


def version_of_namespace(namespace: str | None) -> str | None:
    """'fr:gouv:culture:archivesdefrance:seda:v2.2' -> '2.2'; None for any other namespace."""
    if namespace and namespace.startswith(NS_PREFIX):
        v = namespace[len(NS_PREFIX):]
        if v in VERSIONS:
            return v
    return None


def default_reference_dir() -> Path:
    """$DEMAT_REFERENCE_DIR, else <repo>/../shared/reference (where CI places the official files)."""
    env = os.environ.get("DEMAT_REFERENCE_DIR")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "reference").resolve()


def schema_paths(version: str, reference_dir: str | Path | None = None) -> tuple[Path, dict[str, Path]]:
    """The main XSD of a version and the URL map of its W3C imports."""
    check_version(version)
    ref = Path(reference_dir) if reference_dir is not None else default_reference_dir()
    seda = ref / "seda" if (ref / "seda").is_dir() else ref
    main = seda / "schemas" / f"seda-{version}" / f"seda-{version}-main.xsd"
    w3c = seda / "w3c"
    return main, {url: w3c / name for url, name in W3C_URLS.items()}


@functools.lru_cache(maxsize=16)
def _load(version: str, reference_dir: str) -> etree.XMLSchema:
    main, url_map = schema_paths(version, reference_dir)
    missing = [p for p in (main, *url_map.values()) if not p.is_file()]
    if missing:
        raise SchemaUnavailable(
            f"Schéma officiel SEDA {version} introuvable : {', '.join(sorted({str(p) for p in missing}))}. "
            "Indiquez le dossier des schémas de référence avec la variable DEMAT_REFERENCE_DIR."
        )
    try:
        return xmlsafe.schema_from_file(main, url_map=url_map)
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError, OSError) as exc:
        raise SchemaUnavailable(f"Schéma officiel SEDA {version} illisible ({main}) : {exc}") from exc


def seda_schema(version: str, reference_dir: str | Path | None = None) -> etree.XMLSchema:
    """The official SEDA schema of `version`, loaded offline and cached."""
    ref = Path(reference_dir) if reference_dir is not None else default_reference_dir()
    return _load(check_version(version), str(ref.resolve()))


_NS_IN_MSG = re.compile(r"\{[^}]*\}")


def _clean(text: str) -> str:
    return _NS_IN_MSG.sub("", text or "").strip()


def validate_manifest(
    xml: bytes | etree._Element,
    version: str | None = None,
    *,
    reference_dir: str | Path | None = None,
) -> list[Finding]:
    """Validate a SEDA message (ArchiveTransfer, replies, ...) against its official schema.

    `version` None: taken from the root namespace. Raises SchemaUnavailable when the official
    schema files are missing (a configuration fault, not a fault of the message).
    """
    if isinstance(xml, (bytes, bytearray)):
        try:
            root = xmlsafe.parse_bytes(bytes(xml))
        except xmlsafe.UnsafeXML as exc:
            return [Finding("SEDA-XML", str(exc), fix="Retirez la déclaration DOCTYPE du bordereau.", layer="lecture")]
        except etree.XMLSyntaxError as exc:
            return [
                Finding(
                    "SEDA-XML",
                    f"Le bordereau n'est pas un XML bien formé : {exc.msg}",
                    fix="Régénérez le bordereau avec un outil conforme.",
                    layer="lecture",
                    line=exc.lineno or None,
                )
            ]
    else:
        root = xml
    found = version_of_namespace(etree.QName(root).namespace)
    if found is None:
        return [
            Finding(
                "SEDA-VERSION",
                "L'espace de noms du bordereau n'est pas celui du SEDA 2.1, 2.2 ou 2.3.",
                fix="Utilisez l'espace de noms fr:gouv:culture:archivesdefrance:seda:v2.N.",
                value=etree.QName(root).namespace or "(aucun)",
                layer="xsd",
            )
        ]
    if version is not None and found != check_version(version):
        return [
            Finding(
                "SEDA-VERSION",
                f"Le bordereau est en SEDA {found} alors que le SEDA {version} est attendu.",
                fix=f"Générez le bordereau en SEDA {version} (réglage seda_version).",
                value=found,
                layer="xsd",
            )
        ]
    schema = seda_schema(found, reference_dir)
    with _LOCK:
        ok = schema.validate(root)
        errors = list(schema.error_log) if not ok else []
    return [
        Finding(
            "SEDA-XSD",
            f"Bordereau non conforme au schéma officiel SEDA {found} : {_clean(e.message)}",
            fix="Corrigez l'élément signalé (ordre, présence ou valeur) selon le schéma SEDA.",
            place=_clean(e.path or ""),
            layer="xsd",
            line=e.line or None,
        )
        for e in errors
    ]
