"""SEDA 2.1 / 2.2 / 2.3 schemas, loaded offline, and bordereau validation.

Which schema judges a bordereau:
- by default, the project's own schema, shipped with the product (`schemas/seda/seda-2.N.xsd`,
  proven to give the official schema's verdict by tests/unit/archive/test_seda_schema_equivalence.py).
  A user's clone or installation has nothing else, and needs nothing else;
- the official SIAF set, when a reference directory is named explicitly (`reference_dir=`, or the
  DEMAT_REFERENCE_DIR variable): an operator who holds the official files may prefer them. Its
  `seda-2.N-main.xsd` imports xml.xsd and xlink.xsd by http URL: an lxml resolver maps those URLs to
  the local W3C copies so that validation never touches the network.
Nothing is ever looked for beside the checkout (../shared is a test fixture, not part of the product).
A schema that cannot be found or compiled raises SchemaUnavailable, a fault of the installation that
is never reported as a fault of the bordereau. Schemas are compiled once per process.
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


PROJECT_DIR = Path(__file__).resolve().parents[2] / "schemas" / "seda"


class SchemaUnavailable(RuntimeError):
    """The SEDA schema files cannot be found or loaded: an installation fault (message in French)."""


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


def default_reference_dir() -> Path | None:
    """$DEMAT_REFERENCE_DIR when set (the official SEDA schemas are then used), else None."""
    env = os.environ.get("DEMAT_REFERENCE_DIR")
    return Path(env) if env else None


def project_schema_path(version: str) -> Path:
    """The project's own schema of a SEDA version, shipped with the product."""
    return PROJECT_DIR / f"seda-{check_version(version)}.xsd"


def schema_paths(version: str, reference_dir: str | Path) -> tuple[Path, dict[str, Path]]:
    """The official main XSD of a version under `reference_dir` and the URL map of its W3C imports."""
    check_version(version)
    ref = Path(reference_dir)
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
            f"Schéma officiel SEDA {version} introuvable dans le dossier de référence indiqué : "
            f"{', '.join(sorted({str(p) for p in missing}))}. Corrigez la variable DEMAT_REFERENCE_DIR, "
            "ou retirez-la pour utiliser le schéma SEDA livré avec demat."
        )
    try:
        return xmlsafe.schema_from_file(main, url_map=url_map)
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError, OSError) as exc:
        raise SchemaUnavailable(f"Schéma officiel SEDA {version} illisible ({main}) : {exc}") from exc


@functools.lru_cache(maxsize=4)
def _load_project(version: str) -> etree.XMLSchema:
    path = project_schema_path(version)
    if not path.is_file():
        raise SchemaUnavailable(
            f"Schéma SEDA {version} introuvable dans l'installation de demat ({path}) : l'installation est "
            "incomplète. Réinstallez demat (make venv, ou pip install du paquet), ou indiquez les schémas "
            "officiels avec la variable DEMAT_REFERENCE_DIR."
        )
    try:
        return xmlsafe.schema_from_file(path)
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError, OSError) as exc:
        raise SchemaUnavailable(f"Schéma SEDA {version} de l'installation illisible ({path}) : {exc}") from exc


def seda_schema(version: str, reference_dir: str | Path | None = None) -> etree.XMLSchema:
    """The SEDA schema of `version`: official when a reference directory is named, else the project's."""
    ref = Path(reference_dir) if reference_dir is not None else default_reference_dir()
    if ref is None:
        return _load_project(check_version(version))
    return _load(check_version(version), str(ref.resolve()))


def schema_origin(reference_dir: str | Path | None = None) -> str:
    """Which schema set judges, in French (for logs and reports)."""
    ref = Path(reference_dir) if reference_dir is not None else default_reference_dir()
    return f"schémas officiels SEDA ({ref})" if ref is not None else f"schéma SEDA de demat ({PROJECT_DIR})"


_NS_IN_MSG = re.compile(r"\{[^}]*\}")


def _clean(text: str) -> str:
    return _NS_IN_MSG.sub("", text or "").strip()


def _french(message: str) -> str:
    """libxml2's English told in French, the original in parentheses (flows.helios.xsdtext)."""
    try:
        from flows.helios.xsdtext import xsd_parts
    except ImportError:  # pragma: no cover - the translator ships with demat
        return message
    return xsd_parts(message)[2]


def syntax_french(message: str) -> str:
    """A libxml2 parser error in French, the original in parentheses (flows.helios.xsdtext)."""
    try:
        from flows.helios.xsdtext import syntax_fr
    except ImportError:  # pragma: no cover - the translator ships with demat
        return message
    return syntax_fr(message)


def validate_manifest(
    xml: bytes | etree._Element,
    version: str | None = None,
    *,
    reference_dir: str | Path | None = None,
) -> list[Finding]:
    """Validate a SEDA message (ArchiveTransfer, replies, ...) against the schema of its version.

    `version` None: taken from the root namespace. Raises SchemaUnavailable when the schema files
    are missing (an installation fault, not a fault of the message).
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
                    f"Le bordereau n'est pas un XML bien formé : {syntax_french(exc.msg)}",
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
            f"Bordereau non conforme au schéma SEDA {found} : {_french(_clean(e.message))}",
            fix="Corrigez l'élément signalé (ordre, présence ou valeur) selon le schéma SEDA.",
            place=_clean(e.path or ""),
            layer="xsd",
            line=e.line or None,
        )
        for e in errors
    ]
