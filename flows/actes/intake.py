"""Read an acte deposited by an agent: a ZIP with the acte (PDF, or XML for a budget), optional
annexes and the metadata, either an actes:Acte XML (acte.xml, or any *.xml whose root is
actes:Acte) or a JSON file acte.json (fields documented in docs/actes-json.md).

The ZIP is read in memory through flows.actes.safearchive (never extracted). Structural problems
(unsafe archive, no or unreadable metadata, a named file missing) raise SubmissionError; the
content rules (numéro, dates, matière, PDF...) are checked by flows.actes.validate.

Typologies with XML metadata: the Acte schema has no field for it, so a NomFichier may start with
the typologie, "99_DE-deliberation.pdf" (the ZIP member may carry the prefix or not). Without it,
the main document takes the default typologie of its nature (99_DE for DE...) and annexes the same.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

from lxml import etree

from flows import xmlsafe
from flows.actes import xmlutil as X
from flows.actes.classification import DEFAULT_MAIN_TYPOLOGIES
from flows.actes.model import NS_ACTES, ActeMetadata, ActeSubmission, Document, nature_abbr
from flows.actes.safearchive import DEFAULT_MAX_TOTAL, UnsafeArchive, read_zip

JSON_FIELDS = {
    "nature", "matiere", "numero_interne", "objet", "date_decision", "document", "annexes", "typologie",
    "classification_date", "precedent_idacte", "document_papier",
}
JSON_REQUIRED = ("nature", "matiere", "numero_interne", "objet", "date_decision", "document")
_TYPO_PREFIX = re.compile(r"^([0-9]{2}_[A-Z0-9]{2})-(.+)$")


class SubmissionError(ValueError):
    """The ZIP cannot be turned into an acte. French message, stable rule code, and how to fix it."""

    def __init__(self, rule: str, message: str, fix: str = "", value: str = "") -> None:
        super().__init__(message)
        self.rule = rule
        self.fix = fix
        self.value = value


def _date(value: Any, field_name: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise SubmissionError("ACTES-DATE-INVALIDE", f"« {field_name} » n'est pas une date AAAA-MM-JJ",
                              "écrivez la date au format AAAA-MM-JJ, par exemple 2025-03-14", str(value)) from exc


def _nature(value: Any) -> str:
    try:
        return nature_abbr(value)
    except ValueError as exc:
        raise SubmissionError("ACTES-NATURE", str(exc), "indiquez DE, AR, AI, CC, BF ou AU", str(value)) from exc


def read_submission(zip_path: str | Path | bytes, *, max_total_bytes: int = DEFAULT_MAX_TOTAL) -> ActeSubmission:
    """ZIP (path or bytes) -> ActeSubmission. Raises SubmissionError (or its subclass for unsafe archives)."""
    try:
        members = read_zip(zip_path, max_total_bytes=max_total_bytes)
    except UnsafeArchive as exc:
        raise SubmissionError(exc.rule, f"archive refusée : {exc}",
                              "déposez un ZIP ordinaire, non chiffré, contenant uniquement les fichiers de l'acte",
                              exc.member) from exc
    except OSError as exc:
        from flows.helios.xsdtext import error_fr

        raise SubmissionError("ARCHIVE-ILLISIBLE", f"fichier illisible : {error_fr(exc)}") from exc
    if not members:
        raise SubmissionError("ACTES-ZIP-VIDE", "l'archive ZIP ne contient aucun fichier",
                              "ajoutez l'acte (PDF) et ses métadonnées (acte.xml ou acte.json)")
    json_files = [n for n in members if n.rsplit("/", 1)[-1].lower() == "acte.json"]
    xml_meta = [n for n in members if n.lower().endswith(".xml") and _is_acte_xml(members[n])]
    if len(json_files) + len(xml_meta) == 0:
        refused = _refused_xml(members)
        if refused is not None:  # the metadata may be there, but refused unread: say which file and why
            name, why = refused
            raise SubmissionError("XML-DANGEREUX",
                                  f"le fichier XML « {name} » a été refusé sans être lu : {why} Aucune autre"
                                  " métadonnée (acte.json ou XML actes:Acte) n'a été trouvée dans l'archive",
                                  "Exportez de nouveau le XML des métadonnées sans déclaration DOCTYPE ni entités"
                                  " (un XML actes:Acte n'en contient jamais), puis redéposez le ZIP.", name)
        raise SubmissionError("ACTES-METADONNEES-ABSENTES",
                              "l'archive ne contient pas de métadonnées (acte.json ou XML actes:Acte)",
                              "ajoutez un fichier acte.json (voir docs/actes-json.md) ou un XML actes:Acte")
    if len(json_files) + len(xml_meta) > 1:
        raise SubmissionError("ACTES-METADONNEES-MULTIPLES",
                              "l'archive contient plusieurs fichiers de métadonnées : "
                              + ", ".join(json_files + xml_meta),
                              "ne gardez qu'un seul fichier de métadonnées (acte.json ou acte.xml)")
    if json_files:
        meta_name, fmt = json_files[0], "json"
        md, doc_ref, annex_refs = _from_json(members[meta_name])
    else:
        meta_name, fmt = xml_meta[0], "xml"
        md, doc_ref, annex_refs = _from_xml(members[meta_name])

    used: list[str] = []

    def resolve(ref: str) -> tuple[str, str]:
        """(member name, typologie carried by the reference name)."""
        typo = ""
        candidates = [ref]
        m = _TYPO_PREFIX.match(ref.rsplit("/", 1)[-1])
        if m:
            typo = m.group(1)
            candidates.append(m.group(2))
        for cand in candidates:
            if cand in members and cand != meta_name:
                return cand, typo
            by_base = [n for n in members if n.rsplit("/", 1)[-1] == cand and n != meta_name]
            if len(by_base) == 1:
                return by_base[0], typo
            if len(by_base) > 1:
                raise SubmissionError("ACTES-NOMS-DOUBLONS", f"plusieurs fichiers de l'archive s'appellent « {cand} »",
                                      "renommez les fichiers pour que chaque nom soit unique", cand)
        raise SubmissionError("ACTES-FICHIER-ABSENT",
                              f"le fichier « {ref} » cité dans les métadonnées est absent de l'archive",
                              "ajoutez le fichier au ZIP ou corrigez son nom dans les métadonnées", ref)

    default_typo = DEFAULT_MAIN_TYPOLOGIES[md.nature][0]
    doc_member, prefix_typo = resolve(doc_ref)
    used.append(doc_member)
    main_typo = md.typologie or prefix_typo or default_typo
    document = Document(doc_member.rsplit("/", 1)[-1], members[doc_member], main_typo)
    annexes = []
    for ref, typo in annex_refs:
        member, prefix_typo = resolve(ref)
        used.append(member)
        annexes.append(Document(member.rsplit("/", 1)[-1], members[member], typo or prefix_typo or main_typo))
    duplicates = sorted({u for u in used if used.count(u) > 1})
    md = ActeMetadata(
        nature=md.nature, matiere=md.matiere, numero_interne=md.numero_interne, objet=md.objet,
        date_decision=md.date_decision, typologie=main_typo, classification_date=md.classification_date,
        annexes_typologies=tuple(a.typologie for a in annexes), precedent_idacte=md.precedent_idacte,
        document_papier=md.document_papier,
    )
    unreferenced = [n for n in members if n != meta_name and n not in used]
    return ActeSubmission(md, document, annexes, metadata_format=fmt, metadata_file=meta_name,
                          unreferenced=unreferenced, duplicate_references=duplicates)


def _refused_xml(members: dict[str, bytes]) -> tuple[str, str] | None:
    """(name, French reason) of the first XML member refused as hostile (DOCTYPE, entities, size)."""
    for name in sorted(n for n in members if n.lower().endswith(".xml")):
        try:
            xmlsafe.parse_bytes(members[name])
        except xmlsafe.UnsafeXML as exc:
            return name, str(exc)
        except etree.XMLSyntaxError:
            continue
    return None


def _is_acte_xml(data: bytes) -> bool:
    try:
        root = xmlsafe.parse_bytes(data)
    except (xmlsafe.UnsafeXML, etree.XMLSyntaxError):
        return False
    return etree.QName(root).namespace == NS_ACTES and etree.QName(root).localname == "Acte"


def _from_xml(data: bytes) -> tuple[ActeMetadata, str, list[tuple[str, str]]]:
    root = X.parse(data)
    missing = [a for a in ("Date", "NumeroInterne", "CodeNatureActe") if not X.attr(root, a)]
    if missing:
        raise SubmissionError("ACTES-METADONNEES-INCOMPLETES",
                              f"attribut(s) manquant(s) dans actes:Acte : {', '.join('actes:' + m for m in missing)}",
                              "complétez le XML actes:Acte")
    codes = []
    for i in range(1, 6):
        c = X.child(root, f"CodeMatiere{i}")
        if c is not None:
            if len(codes) != i - 1:
                raise SubmissionError("ACTES-MATIERE-FORMAT",
                                      f"actes:CodeMatiere{i} est présent alors que actes:CodeMatiere{len(codes) + 1} manque",
                                      "indiquez les niveaux de matière sans en sauter", f"CodeMatiere{i}")
            codes.append(X.attr(c, "CodeMatiere").strip())
    objet_el = X.child(root, "Objet")
    doc_ref = X.text(X.child(root, "Document"), "NomFichier")
    if not doc_ref:
        raise SubmissionError("ACTES-METADONNEES-INCOMPLETES", "actes:Document/actes:NomFichier manque",
                              "indiquez le nom du fichier de l'acte")
    annexes_el = X.child(root, "Annexes")
    annex_refs = []
    if annexes_el is not None:
        annex_refs = [(X.text(a, "NomFichier"), "") for a in annexes_el.iterfind(X.q("Annexe"))]
    cdate_text = X.text(root, "ClassificationDateVersion")
    prec = X.child(root, "PrecedentIdentifiantActe")
    papier = X.child(root, "DocumentPapier")
    md = ActeMetadata(
        nature=_nature(X.attr(root, "CodeNatureActe")),
        matiere=".".join(codes),
        numero_interne=X.attr(root, "NumeroInterne"),
        objet=(objet_el.text or "") if objet_el is not None else "",
        date_decision=_date(X.attr(root, "Date"), "actes:Date"),
        classification_date=_date(cdate_text, "ClassificationDateVersion") if cdate_text else None,
        precedent_idacte=(X.attr(prec, "IDActe") or None) if prec is not None else None,
        document_papier=papier is not None and (papier.text or "").strip().upper() == "O",
    )
    return md, doc_ref, annex_refs


def _from_json(data: bytes) -> tuple[ActeMetadata, str, list[tuple[str, str]]]:
    if len(data) > 1024 * 1024:
        raise SubmissionError("ACTES-JSON", "acte.json dépasse 1 Mio", "un fichier de métadonnées tient en quelques Ko")
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError("ACTES-JSON", f"acte.json illisible : {exc}",
                              "enregistrez acte.json en UTF-8 et vérifiez sa syntaxe JSON") from exc
    if not isinstance(obj, dict):
        raise SubmissionError("ACTES-JSON", "acte.json doit contenir un objet JSON { ... }")
    unknown = sorted(set(obj) - JSON_FIELDS)
    if unknown:
        raise SubmissionError("ACTES-JSON-CHAMP", f"champ(s) inconnu(s) dans acte.json : {', '.join(unknown)}",
                              f"champs possibles : {', '.join(sorted(JSON_FIELDS))}", ", ".join(unknown))
    missing = [f for f in JSON_REQUIRED if obj.get(f) in (None, "")]
    if missing:
        raise SubmissionError("ACTES-METADONNEES-INCOMPLETES",
                              f"champ(s) obligatoire(s) absent(s) de acte.json : {', '.join(missing)}",
                              "voir docs/actes-json.md")
    for f in ("matiere", "numero_interne", "objet", "document", "typologie"):
        if f in obj and obj[f] is not None and not isinstance(obj[f], str):
            raise SubmissionError("ACTES-JSON-TYPE", f"le champ « {f} » doit être une chaîne de caractères",
                                  f"écrivez \"{f}\": \"...\" entre guillemets", str(obj[f]))
    annexes = obj.get("annexes") or []
    if not isinstance(annexes, list):
        raise SubmissionError("ACTES-JSON-TYPE", "« annexes » doit être une liste [{\"fichier\": ..., \"typologie\": ...}]")
    annex_refs = []
    for i, a in enumerate(annexes, 1):
        if isinstance(a, str):
            annex_refs.append((a, ""))
        elif isinstance(a, dict) and isinstance(a.get("fichier"), str) and a["fichier"]:
            extra = set(a) - {"fichier", "typologie"}
            if extra:
                raise SubmissionError("ACTES-JSON-CHAMP", f"annexe {i} : champ(s) inconnu(s) {', '.join(sorted(extra))}",
                                      "une annexe a les champs « fichier » et « typologie »")
            annex_refs.append((a["fichier"], str(a.get("typologie") or "")))
        else:
            raise SubmissionError("ACTES-JSON-TYPE", f"annexe {i} : « fichier » manque",
                                  "écrivez {\"fichier\": \"annexe.pdf\", \"typologie\": \"99_DE\"}")
    matiere = str(obj["matiere"]).strip()
    cdate = obj.get("classification_date")
    md = ActeMetadata(
        nature=_nature(obj["nature"]),
        matiere=matiere,
        numero_interne=str(obj["numero_interne"]),
        objet=str(obj["objet"]),
        date_decision=_date(obj["date_decision"], "date_decision"),
        typologie=str(obj.get("typologie") or ""),
        classification_date=_date(cdate, "classification_date") if cdate else None,
        precedent_idacte=obj.get("precedent_idacte") or None,
        document_papier=bool(obj.get("document_papier", False)),
    )
    return md, str(obj["document"]), annex_refs
