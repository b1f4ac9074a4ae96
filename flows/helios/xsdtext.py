"""libxml2 messages told in French: an agent never reads a raw English fragment first.

libxml2 (through lxml) reports schema and syntax errors in English ("Element 'X': [facet
'pattern'] The value 'Y' is not accepted by the pattern 'Z'."). Every validator of demat turns
them into a French sentence; the original text may follow in parentheses, for the support desk.
"""

from __future__ import annotations

import re

_ELEMENT = re.compile(r"^Element '(?:\{([^}]*)\})?([^']+)'(?:, attribute '([^']+)')?: (.*)$", re.S)
_VALUE = re.compile(r"'([^']*)' is not (?:a valid value|accepted|facet-valid)|The value '([^']*)'")
_EXPECTED = re.compile(r"Expected is (?:one of )?\( ?(.*?) ?\)")

# libxml2 parser (syntax) messages -> French
_SYNTAX = (
    (re.compile(r"Premature end of data in tag (\S+)"), "fin de fichier prématurée dans la balise « {0} » (fichier tronqué ?)"),
    (re.compile(r"Opening and ending tag mismatch: (\S+) line (\d+) and (\S+)"),
     "la balise « {0} » ouverte ligne {1} est fermée par « {2} »"),
    (re.compile(r"EndTag: '</' not found"), "balise de fermeture introuvable (fichier tronqué ?)"),
    (re.compile(r"Extra content at the end of the document"), "contenu en trop après la fin du document"),
    (re.compile(r"Start tag expected, '<' not found"), "aucune balise d'ouverture trouvée : ce n'est pas du XML"),
    (re.compile(r"Document is empty"), "le document est vide"),
    (re.compile(r"Entity '([^']+)' not defined"), "entité « {0} » non définie"),
    (re.compile(r"xmlParseEntityRef: no name"), "caractère « & » isolé (à écrire &amp;amp;)"),
    (re.compile(r"StartTag: invalid element name"), "nom d'élément invalide"),
    (re.compile(r"Couldn't find end of Start Tag (\S+)"), "balise d'ouverture « {0} » non terminée (fichier tronqué ?)"),
    (re.compile(r"AttValue: (?:\" or )?['\"] expected"), "valeur d'attribut sans guillemets ou non terminée (fichier tronqué ?)"),
    (re.compile(r"attributes construct error"), "attribut mal formé"),
    (re.compile(r"Attribute (\S+) redefined"), "attribut « {0} » répété"),
    (re.compile(r"Input is not proper UTF-8"), "octets invalides pour l'encodage UTF-8 déclaré"),
    (re.compile(r"Char 0x([0-9A-Fa-f]+) out of allowed range"), "caractère 0x{0} interdit en XML"),
    (re.compile(r"PCDATA invalid Char value (\d+)"), "caractère de code {0} interdit en XML"),
    (re.compile(r"Unsupported encoding (\S+)"), "encodage « {0} » non pris en charge"),
    (re.compile(r"Namespace prefix (\S+) (?:on (\S+) )?is not defined"), "préfixe d'espace de noms « {0} » non déclaré"),
    (re.compile(r"xmlns:?\S*: '([^']*)' is not a valid URI"), "espace de noms « {0} » invalide"),
    (re.compile(r"huge input lookup|Huge input lookup|xmlSAX2Characters: huge text node"),
     "nœud texte démesuré (plus de 10 Mo)"),
    (re.compile(r"Detected an entity reference loop"), "boucle d'entités (attaque par expansion)"),
)


def syntax_fr(message: str) -> str:
    """A libxml2 parser error in French, the original in parentheses."""
    raw = (message or "").strip()
    for pattern, text in _SYNTAX:
        m = pattern.search(raw)
        if m:
            return f"{text.format(*m.groups())} (libxml2 : {raw})"
    return f"erreur de syntaxe XML (libxml2 : {raw})" if raw else "erreur de syntaxe XML"


def xsd_parts(message: str) -> tuple[str, str, str]:
    """(element local name, offending value, French sentence) for one libxml2 schema message."""
    raw = (message or "").strip()
    m = _ELEMENT.match(raw)
    ns, name, attr, rest = (m.group(1), m.group(2), m.group(3), m.group(4)) if m else ("", "", None, raw)
    value = ""
    vm = _VALUE.search(rest)
    if vm:
        value = vm.group(1) if vm.group(1) is not None else vm.group(2) or ""
    expected = _EXPECTED.search(rest)
    exp = f" (attendu : {expected.group(1)})" if expected else ""
    where = f"« {name} »" + (f", attribut « {attr} »" if attr else "")
    if "No matching global declaration" in rest:
        text = f"la racine « {name} »" + (f" (espace de noms {ns})" if ns else " (sans espace de noms)") + \
            " n'est pas celle qu'attend le schéma"
    elif "This element is not expected" in rest:
        text = f"élément {where} inattendu à cet endroit{exp}"
    elif "Missing child element" in rest:
        text = f"il manque un élément obligatoire dans {where}{exp}"
    elif "is required but missing" in rest:
        missing = re.search(r"The attribute '([^']+)'", rest)
        text = f"l'attribut obligatoire « {missing.group(1) if missing else '?'} » de « {name} » est absent"
    elif "is not allowed" in rest and "attribute" in rest.lower():
        bad = re.search(r"The attribute '([^']+)'", rest)
        text = f"l'attribut « {bad.group(1) if bad else attr} » n'est pas admis sur « {name} »"
    elif "[facet 'pattern']" in rest:
        text = f"valeur « {value} » de {where} : format non respecté"
    elif "[facet 'enumeration']" in rest:
        allowed = re.search(r"set \{(.*)\}", rest)
        text = f"valeur « {value} » de {where} hors de la liste autorisée" + (
            f" ({allowed.group(1)})" if allowed else "")
    elif "[facet 'maxLength']" in rest or "[facet 'length']" in rest or "[facet 'minLength']" in rest:
        text = f"valeur « {value} » de {where} : longueur non admise"
    elif "[facet 'totalDigits']" in rest or "[facet 'fractionDigits']" in rest:
        text = f"valeur « {value} » de {where} : trop de chiffres ou de décimales"
    elif "[facet 'minInclusive']" in rest or "[facet 'minExclusive']" in rest or "[facet 'max" in rest:
        text = f"valeur « {value} » de {where} hors des bornes admises"
    elif "is not a valid value of the atomic type" in rest or "is not a valid value" in rest:
        atomic = re.search(r"atomic type '(?:xs:)?([^']+)'", rest)
        kind = {"date": "date AAAA-MM-JJ", "decimal": "nombre", "boolean": "booléen (0/1/true/false)",
                "integer": "entier", "gYear": "année AAAA", "dateTime": "date et heure"}.get(
            atomic.group(1) if atomic else "", "type attendu")
        text = f"valeur « {value} » de {where} invalide ({kind})"
    elif "Character content other than whitespace is not allowed" in rest:
        text = f"l'élément {where} ne doit pas contenir de texte (la valeur se met dans l'attribut V)"
    elif "Element content is not allowed" in rest or "Character content is not allowed" in rest:
        text = f"l'élément {where} ne doit pas avoir de contenu"
    elif "Duplicate key-sequence" in rest or "not unique" in rest:
        text = f"valeur en double pour {where}"
    else:
        text = f"{where} non conforme au schéma" if name else "document non conforme au schéma"
    return name, value, f"{text} (libxml2 : {raw})"


_OS_ERRORS = {
    "ENOENT": "fichier ou dossier introuvable",
    "EACCES": "permission refusée",
    "EPERM": "opération non permise",
    "EISDIR": "c'est un dossier, pas un fichier",
    "ENOTDIR": "un élément du chemin n'est pas un dossier",
    "ENOSPC": "disque plein",
    "EROFS": "système de fichiers en lecture seule",
    "EMFILE": "trop de fichiers ouverts",
    "ENAMETOOLONG": "nom de fichier trop long",
    "ELOOP": "trop de liens symboliques",
    "EIO": "erreur d'entrée-sortie du disque",
}
_ARCHIVE_ERRORS = (
    (re.compile(r"Error -?\d+ while decompressing|invalid (?:stored )?block|invalid distance|incorrect header check",
                re.I), "données compressées corrompues"),
    (re.compile(r"File is not a zip file", re.I), "ce n'est pas une archive ZIP"),
    (re.compile(r"Bad CRC-32", re.I), "somme de contrôle (CRC) fausse : fichier corrompu"),
    (re.compile(r"Bad magic number|Truncated file header|Truncated|truncated", re.I), "archive tronquée ou corrompue"),
    (re.compile(r"compression method", re.I), "méthode de compression non prise en charge"),
    (re.compile(r"encrypted|password required", re.I), "fichier chiffré (mot de passe)"),
    (re.compile(r"not a gzip file|Not a gzipped file", re.I), "ce n'est pas un fichier gzip"),
    (re.compile(r"end-of-stream marker|unexpected end of data|Compressed file ended", re.I),
     "fin de données inattendue : archive tronquée"),
    (re.compile(r"empty file", re.I), "fichier vide"),
    (re.compile(r"invalid header|bad checksum|truncated header", re.I), "en-tête tar invalide"),
    (re.compile(r"could not be opened successfully", re.I), "format d'archive non reconnu"),
    (re.compile(r"is not a zip|not a tar", re.I), "format d'archive non reconnu"),
)


def error_fr(exc: BaseException) -> str:
    """A French description of an exception from the OS, zipfile, tarfile, gzip, zlib or libxml2,
    the original text in parentheses (never a raw English fragment first)."""
    import errno as _errno

    from lxml import etree

    if isinstance(exc, etree.XMLSyntaxError):
        return syntax_fr(exc.msg or str(exc))
    if isinstance(exc, OSError) and exc.errno is not None and not str(exc).startswith(("Not a gzipped", "Bad")):
        code = _errno.errorcode.get(exc.errno, "")
        fr = _OS_ERRORS.get(code, f"erreur système {code or exc.errno}")
        return f"{fr} ({exc.strerror or exc})"
    raw = str(exc).strip() or type(exc).__name__
    for pattern, fr in _ARCHIVE_ERRORS:
        if pattern.search(raw):
            return f"{fr} ({raw})"
    if isinstance(exc, EOFError):
        return f"fin de données inattendue : fichier tronqué ({raw})"
    return f"erreur de lecture {type(exc).__name__} ({raw})"
