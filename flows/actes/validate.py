"""Check an acte ZIP before it goes to the préfecture: the rules @ctes applies (and a few the
ministère only reports days later), with French findings saying where, what and how to fix.
"""

from __future__ import annotations

import io
import logging
from datetime import date
from pathlib import Path

from flows.actes import naming
from flows.actes import xmlutil as X
from flows.actes.classification import Classification, national_default, typologie_ok
from flows.actes.intake import SubmissionError, read_submission
from flows.actes.model import MATIERE_RE, NATURES, NUMERO_RE, OBJET_MAX, ActeSubmission
from flows.actes.safearchive import DEFAULT_MAX_TOTAL
from flows.actes.transmission import build_acte_xml, paris_today
from flows.findings import Finding, Report
from flows.helios.xsdtext import error_fr

KIND = "acte_zip"


def validate_acte_zip(path: str | Path, collectivite=None, *, today: date | None = None,
                      known_numeros: set[str] | None = None, classification: Classification | None = None,
                      max_total_bytes: int = DEFAULT_MAX_TOTAL) -> Report:
    """Every finding about an acte ZIP; `report.ok` means it can be transmitted."""
    path = Path(path)
    report = Report(file=str(path), kind=KIND)
    today = today or paris_today()
    cls = classification or national_default()
    try:
        size = path.stat().st_size
    except OSError as exc:
        report.add(Finding("ACTES-FICHIER", f"fichier illisible : {error_fr(exc)}", layer="lecture", value=str(path)))
        return report
    if size > max_total_bytes:
        report.add(Finding("ACTES-TAILLE", f"l'archive pèse {size} octets, au-delà du maximum de {max_total_bytes}",
                           "allégez les annexes (PDF compressés) ou transmettez-les séparément", "archive",
                           str(size), layer="lecture"))
        return report
    try:
        sub = read_submission(path, max_total_bytes=max_total_bytes)
    except SubmissionError as exc:
        report.add(Finding(exc.rule, str(exc), exc.fix, "archive", exc.value, layer="lecture"))
        return report
    md = sub.metadata
    report.summary = {
        "numero_interne": md.numero_interne, "nature": md.nature, "objet": md.objet,
        "date": md.date_decision.isoformat(), "matiere": md.matiere, "typologie": md.typologie,
        "classification_date": str(md.classification_date or cls.date or ""),
        "files": [d.name for d in sub.files], "annexes": len(sub.annexes),
        "total_bytes": sum(len(d.data) for d in sub.files), "metadata_format": sub.metadata_format,
    }
    check_metadata(sub, report, today=today, known_numeros=known_numeros, classification=cls,
                   classification_given=classification is not None)
    check_files(sub, report, max_total_bytes=max_total_bytes, collectivite=collectivite)
    check_schema(sub, report, collectivite, cls)
    return report


def _f(report: Report, rule: str, message: str, fix: str, place: str, value: str = "",
       severity: str = "error", layer: str = "metier") -> None:
    report.add(Finding(rule, message, fix, place, value, severity, layer))  # type: ignore[arg-type]


def check_metadata(sub: ActeSubmission, report: Report, *, today: date, known_numeros: set[str] | None,
                   classification: Classification, classification_given: bool) -> None:
    md = sub.metadata
    where = f"métadonnées ({sub.metadata_file})"
    if not NUMERO_RE.match(md.numero_interne):
        _f(report, "ACTES-NUMERO", "numéro interne non conforme : 1 à 15 caractères parmi A-Z, 0-9 et « _ », "
           "sans « _ » au début ni à la fin", "écrivez le numéro en majuscules sans espace ni tiret, par ex. DEL2025_014",
           f"{where} / numéro interne", md.numero_interne)
    elif known_numeros and md.numero_interne in known_numeros:
        _f(report, "ACTES-NUMERO-DOUBLON", "ce numéro interne a déjà été utilisé par la collectivité",
           "chaque acte transmis doit avoir un numéro unique : attribuez le numéro suivant du registre",
           f"{where} / numéro interne", md.numero_interne)
    if md.date_decision > today:
        _f(report, "ACTES-DATE-FUTURE", f"la date de décision est dans le futur (nous sommes le {today:%d/%m/%Y})",
           "indiquez la date à laquelle l'acte a été décidé ou signé", f"{where} / date de décision",
           md.date_decision.isoformat())
    objet = md.objet
    if not objet.strip():
        _f(report, "ACTES-OBJET-VIDE", "l'objet de l'acte est vide", "résumez l'acte en une phrase",
           f"{where} / objet")
    if len(objet) > OBJET_MAX:
        _f(report, "ACTES-OBJET-LONGUEUR", f"l'objet fait {len(objet)} caractères (maximum {OBJET_MAX})",
           "raccourcissez l'objet ; le détail figure dans l'acte lui-même", f"{where} / objet", objet[:60] + "…")
    if "\n" in objet or "\r" in objet:
        _f(report, "ACTES-OBJET-RETOUR-LIGNE", "l'objet contient un retour à la ligne, refusé par @ctes",
           "écrivez l'objet sur une seule ligne", f"{where} / objet", objet.replace("\n", "⏎").replace("\r", "")[:80])
    bad_chars = sorted({c for c in objet if ord(c) > 255})
    if bad_chars:
        _f(report, "ACTES-OBJET-CARACTERES",
           f"l'objet contient des caractères hors ISO-8859-1 ({' '.join(bad_chars)}), qui seront transmis sous forme "
           "de références numériques", "remplacez-les (’ par ', œ par oe, € par euros)", f"{where} / objet",
           "".join(bad_chars), "warning")
    if md.precedent_idacte and not naming.IDACTE_RE.match(md.precedent_idacte):
        _f(report, "ACTES-PRECEDENT", "l'identifiant de l'acte précédent n'est pas un IDActe",
           "format DPT-SIREN-AAAAMMJJ-NUMERO-NATURE", f"{where} / acte précédent", md.precedent_idacte)

    # matière
    if not MATIERE_RE.match(md.matiere):
        _f(report, "ACTES-MATIERE-FORMAT", "code matière non conforme : 2 à 5 niveaux séparés par des points",
           "indiquez la matière de la classification, par exemple 5.2 ou 7.10.2", f"{where} / matière", md.matiere)
    else:
        status, reason = classification.check_matiere(md.matiere)
        if status != "ok":
            _f(report, "ACTES-MATIERE-INCONNUE" if status == "error" else "ACTES-MATIERE-NON-VERIFIEE", reason,
               "choisissez une matière de la classification de la préfecture", f"{where} / matière", md.matiere,
               status)

    # nature and typologies
    main_ok = classification.main_typologies(md.nature)
    if md.typologie not in main_ok:
        _f(report, "ACTES-NATURE-TYPOLOGIE",
           f"la typologie {md.typologie} du document principal ne correspond pas à la nature "
           f"{md.nature} ({NATURES[md.nature][1]})", f"typologie(s) possible(s) : {', '.join(main_ok) or '(aucune)'}",
           f"{where} / typologie de l'acte", md.typologie)
    allowed = set(classification.typologies(md.nature))
    for doc in sub.annexes:
        if not typologie_ok(doc.typologie):
            _f(report, "ACTES-TYPOLOGIE-ANNEXE", "typologie d'annexe non conforme (format NN_XX)",
               "indiquez un code de la classification, par exemple 99_DE", f"annexe « {doc.name} »", doc.typologie)
        elif not classification.national_default and doc.typologie not in allowed:
            _f(report, "ACTES-TYPOLOGIE-ANNEXE", f"typologie inconnue pour la nature {md.nature}",
               f"typologies possibles : {', '.join(sorted(allowed))}", f"annexe « {doc.name} »", doc.typologie)

    # classification date
    current = classification.date
    if md.classification_date and current and md.classification_date != current:
        _f(report, "ACTES-CLASSIFICATION-DATE",
           f"la date de classification de l'acte ({md.classification_date:%d/%m/%Y}) n'est pas celle en vigueur "
           f"({current:%d/%m/%Y}) : la préfecture répondrait par une anomalie 002",
           f"indiquez {current.isoformat()} ou retirez classification_date pour utiliser la classification en vigueur",
           f"{where} / date de classification", md.classification_date.isoformat())
    elif not md.classification_date and not current:
        _f(report, "ACTES-CLASSIFICATION-DATE-ABSENTE",
           "aucune date de classification : ni dans les métadonnées, ni de classification reçue de la préfecture",
           "indiquez classification_date ou demandez la classification à la préfecture (DemandeClassification)",
           f"{where} / date de classification")
    if not classification_given and sub.annexes:
        _f(report, "ACTES-CLASSIFICATION-NATIONALE",
           "classification de la préfecture inconnue : les typologies des annexes n'ont été vérifiées que sur leur format",
           "chargez la classification de la préfecture (RetourClassification) pour une vérification complète",
           f"{where} / typologies", severity="warning")


def check_files(sub: ActeSubmission, report: Report, *, max_total_bytes: int, collectivite=None) -> None:
    md = sub.metadata
    total = 0
    seen: dict[str, str] = {}
    for i, doc in enumerate(sub.files):
        place = "acte" if i == 0 else "annexe"
        place = f"{place} « {doc.name} »"
        total += len(doc.data)
        key = doc.name.lower()
        if key in seen:
            _f(report, "ACTES-NOMS-DOUBLONS", f"deux fichiers portent le même nom (« {seen[key]} » et « {doc.name} »)",
               "donnez un nom distinct à chaque fichier", place, doc.name, layer="lecture")
        seen[key] = doc.name
        ext = doc.extension
        if ext == "xml":
            if md.nature != "BF":
                _f(report, "ACTES-FORMAT", "un fichier XML n'est accepté que pour les documents budgétaires (BF)",
                   "joignez le document en PDF", place, doc.name, layer="lecture")
            else:
                # a budget XML (TotEM DocumentBudgetaire): schema, SIRET, exercise, scellement
                from flows.actes.budget import summary as budget_summary
                from flows.actes.budget import validate_budget

                report.extend(validate_budget(doc.data, name=doc.name,
                                              siren=getattr(collectivite, "siren", None) or None,
                                              decision_date=md.date_decision))
                report.summary.setdefault("budgets", []).append({"fichier": doc.name, **budget_summary(doc.data)})
            continue
        if ext != "pdf":
            _f(report, "ACTES-FORMAT", f"format « .{ext or '?'} » non accepté : PDF attendu"
               + (" (ou XML pour un budget)" if md.nature == "BF" else ""),
               "convertissez le document en PDF", place, doc.name, layer="lecture")
            continue
        check_pdf(doc.data, place, report)
    if total > max_total_bytes:
        _f(report, "ACTES-TAILLE", f"les fichiers totalisent {total} octets (maximum {max_total_bytes})",
           "réduisez la taille des PDF", "archive", str(total), layer="lecture")
    for name in sub.duplicate_references:
        _f(report, "ACTES-NOMS-DOUBLONS", "le même fichier est cité deux fois dans les métadonnées",
           "chaque fichier n'apparaît qu'une fois (acte ou annexe)", f"fichier « {name} »", name, layer="lecture")
    for name in sub.unreferenced:
        _f(report, "ACTES-FICHIER-NON-REFERENCE",
           "ce fichier est dans l'archive mais n'est cité ni comme acte ni comme annexe : il ne serait pas transmis",
           "ajoutez-le aux annexes des métadonnées ou retirez-le du ZIP", f"fichier « {name} »", name, layer="lecture")


def check_pdf(data: bytes, place: str, report: Report) -> None:
    if not data.startswith(b"%PDF-"):
        _f(report, "ACTES-PDF-SIGNATURE", "le fichier n'est pas un PDF (il ne commence pas par %PDF-)",
           "enregistrez ou imprimez le document au format PDF", place, data[:8].decode("latin-1", "replace"),
           layer="lecture")
        return
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            _f(report, "ACTES-PDF-CHIFFRE", "le PDF est chiffré ou protégé par mot de passe : la préfecture ne peut pas le lire",
               "enregistrez une copie du PDF sans protection", place, layer="lecture")
            return
        if len(reader.pages) < 1:
            raise ValueError("aucune page")
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError) as exc:
        _f(report, "ACTES-PDF-ILLISIBLE", f"le PDF est illisible ou endommagé ({exc.__class__.__name__}: {exc})",
           "générez de nouveau le PDF depuis le document source", place, layer="lecture")
    finally:
        logger.setLevel(level)


def check_schema(sub: ActeSubmission, report: Report, collectivite, classification: Classification) -> None:
    """The Acte message that would be transmitted must be valid against schemas/actes."""
    md = sub.metadata
    if not MATIERE_RE.match(md.matiere):
        return  # already reported; the message cannot be written
    cdate = md.classification_date or classification.date or md.date_decision
    doc_name, annex_names = sub.document.name, [a.name for a in sub.annexes]
    if collectivite is not None:
        try:
            idacte = naming.make_idacte(collectivite.departement, collectivite.siren, md.date_decision,
                                        md.numero_interne, md.nature)
            report.summary["idacte"] = idacte
            doc_name = naming.document_name(idacte, "1-1", 1, sub.document.extension or "pdf", md.typologie)
            annex_names = [naming.document_name(idacte, "1-1", i, a.extension or "pdf", a.typologie)
                           for i, a in enumerate(sub.annexes, 2)]
        except ValueError:
            pass
    xml = build_acte_xml(md, doc_name, annex_names, cdate)
    for err in X.schema_errors(xml):
        _f(report, "XSD", f"le message Acte généré n'est pas conforme au schéma @ctes : {err}",
           "corrigez la métadonnée en cause", "message Acte (1-1)", layer="xsd")


def validate_actes_file(path: str | Path) -> Report:
    """A received or sent @ctes archive (tar.gz, kind "actes_archive") or one XML message
    (kind "actes_message"): safe reading, schema of every message, coherence of the archive."""
    from flows.actes.messages import MessageError, parse_message, read_archive
    from flows.actes.safearchive import UnsafeArchive
    from flows.findings import UnreadableFile

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"{path} : {error_fr(exc)}") from exc
    if not data:
        raise UnreadableFile(f"{path} : fichier vide")
    is_archive = data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar"
    report = Report(file=str(path), kind="actes_archive" if is_archive else "actes_message")

    def message_findings(msg) -> None:
        for note in msg.extra.get("avertissements", []):
            _f(report, "ACTES-NATURE-INCONNUE", f"{msg.name or path.name} : {note}",
               "rien à corriger côté collectivité ; signaler le code à l'administrateur de demat pour qu'il soit décrit",
               f"message « {msg.name or path.name} »", msg.nature, layer="metier", severity="warning")
        for err in msg.schema_errors:
            _f(report, "XSD", f"message non conforme au schéma @ctes : {err}",
               "le message doit être régénéré par l'émetteur", f"message « {msg.name or path.name} »", layer="xsd")

    def describe(msg) -> dict:
        return {"name": msg.name, "kind": msg.kind, "code": msg.code, "idacte": msg.idacte,
                "date": str(msg.date or ""), "nature": msg.nature, "summary_fr": msg.summary_fr}

    if is_archive:
        try:
            archive = read_archive(data, path.name)
        except UnsafeArchive as exc:
            _f(report, exc.rule, f"archive refusée : {exc}", "demandez à l'émetteur une archive conforme", "archive",
               exc.member, layer="lecture")
            return report
        for problem in archive.problems:
            _f(report, "ACTES-ARCHIVE", problem, "l'archive doit contenir exactement les fichiers annoncés",
               "archive", layer="lecture")
        for note in archive.notes:
            _f(report, "ACTES-ARCHIVE-FICHIER-NON-CITE", f"{path.name} : {note}",
               "rien à faire : le fichier est gardé au dossier ; ouvrez-le si la préfecture y a mis un message",
               "archive", layer="lecture", severity="warning")
        if archive.envelope is not None:
            message_findings(archive.envelope)
        for msg in archive.messages:
            message_findings(msg)
        report.summary = {
            "envelope": archive.envelope_name, "siren": archive.envelope.siren if archive.envelope else "",
            "messages": [describe(m) for m in archive.messages], "documents": list(archive.documents),
        }
        return report
    try:
        msg = parse_message(data, path.name)
    except MessageError as exc:
        _f(report, "ACTES-MESSAGE", str(exc), "vérifiez qu'il s'agit bien d'un message @ctes", "message",
           layer="lecture")
        return report
    message_findings(msg)
    report.summary = describe(msg)
    return report
