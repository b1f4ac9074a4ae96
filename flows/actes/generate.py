"""Generate acte ZIPs as an agent would deposit them: demo, tests, benchmarks.

`defects` injects one fault each, so that every validation rule can be exercised:
future_date, bad_numero, objet_newline, objet_too_long, objet_empty, not_pdf, broken_pdf,
encrypted_pdf, duplicate_names, unknown_matiere, bad_matiere, bad_typologie,
wrong_classification_date, no_classification_date, missing_file, unreferenced_file, no_metadata,
xml_document (a non-budget acte as XML), zip_slip.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from datetime import date, timedelta

from flows.actes import xmlutil as X
from flows.actes.classification import DEFAULT_MAIN_TYPOLOGIES
from flows.actes.model import ActeMetadata, nature_abbr
from flows.actes.pdf import encrypt_pdf, minimal_pdf
from flows.actes.transmission import fill_donnees_acte, paris_today

DEMO_CLASSIFICATION_DATE = date(2024, 1, 15)
DEFECTS = {
    "future_date", "bad_numero", "objet_newline", "objet_too_long", "objet_empty", "not_pdf", "broken_pdf",
    "encrypted_pdf", "duplicate_names", "unknown_matiere", "bad_matiere", "bad_typologie",
    "wrong_classification_date", "no_classification_date", "missing_file", "unreferenced_file",
    "no_metadata", "xml_document", "zip_slip",
}


def generate_acte_zip(*, collectivite=None, numero: str, nature: str = "DE", matiere: str = "5.2",
                      objet: str = "Désignation des délégués au syndicat intercommunal",
                      date_decision: date | None = None, metadata_format: str = "xml", n_annexes: int = 0,
                      defects: Iterable[str] = (), classification_date: date | None = DEMO_CLASSIFICATION_DATE,
                      typologie: str | None = None, annex_typologie: str | None = None) -> bytes:
    """A ZIP with a real small PDF acte, `n_annexes` PDF annexes and acte.xml or acte.json."""
    defects = set(defects)
    unknown = defects - DEFECTS
    if unknown:
        raise ValueError(f"défaut(s) inconnu(s) : {sorted(unknown)} (possibles : {sorted(DEFECTS)})")
    if metadata_format not in ("xml", "json"):
        raise ValueError("metadata_format doit valoir « xml » ou « json »")
    nature = nature_abbr(nature)
    today = paris_today()
    date_decision = date_decision or today
    if "future_date" in defects:
        date_decision = today + timedelta(days=30)
    if "bad_numero" in defects:
        numero = "del-" + numero.lower() + "_"
    if "objet_newline" in defects:
        objet = objet + "\nsuite de l'objet"
    if "objet_too_long" in defects:
        objet = (objet + " ") * (600 // max(len(objet), 1) + 1)
    if "objet_empty" in defects:
        objet = "   "
    if "unknown_matiere" in defects:
        matiere = "9.9"
    if "bad_matiere" in defects:
        matiere = "5"
    if "wrong_classification_date" in defects:
        classification_date = date(2001, 1, 1)
    if "no_classification_date" in defects:
        classification_date = None
    typo = typologie or DEFAULT_MAIN_TYPOLOGIES[nature][0]
    if "bad_typologie" in defects:
        typo = "99_AI" if nature != "AI" else "99_DE"
    annex_typo = annex_typologie or typo
    if "duplicate_names" in defects:
        n_annexes = max(n_annexes, 2)

    who = getattr(collectivite, "name", "Collectivité de démonstration")
    ext = "xml" if "xml_document" in defects else "pdf"
    main = minimal_pdf(who, f"Acte n° {numero}", objet.replace("\n", " ")[:90], f"Décision du {date_decision:%d/%m/%Y}")
    if "xml_document" in defects:
        main = b"<?xml version='1.0'?><document>acte</document>"
    if "not_pdf" in defects:
        main = "Ceci n'est pas un PDF : c'est un document texte renommé.\n".encode()
    if "broken_pdf" in defects:
        main = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage without xref\n%%EOF\n"
    if "encrypted_pdf" in defects:
        main = encrypt_pdf(main)
    files: list[tuple[str, bytes]] = [(f"acte_{numero}.{ext}".replace("/", "_"), main)]
    for i in range(1, n_annexes + 1):
        name = f"annexe_{i}.pdf"
        if "duplicate_names" in defects and i == 2:
            name = "ANNEXE_1.pdf"
        files.append((name, minimal_pdf(who, f"Annexe {i} à l'acte n° {numero}")))
    doc_name = files[0][0]
    annex_names = [n for n, _ in files[1:]]
    if "missing_file" in defects:
        doc_name = "absent.pdf"

    members: list[tuple[str, bytes]] = list(files)
    if "no_metadata" not in defects:
        if metadata_format == "json":
            meta = {
                "nature": nature, "matiere": matiere, "numero_interne": numero, "objet": objet,
                "date_decision": date_decision.isoformat(), "document": doc_name, "typologie": typo,
                "annexes": [{"fichier": n, "typologie": annex_typo} for n in annex_names],
            }
            if classification_date:
                meta["classification_date"] = classification_date.isoformat()
            members.append(("acte.json", json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8")))
        else:
            members.append(("acte.xml", acte_metadata_xml(
                nature, matiere, numero, objet, date_decision, classification_date,
                f"{typo}-{doc_name}", [f"{annex_typo}-{n}" for n in annex_names])))
    if "unreferenced_file" in defects:
        members.append(("oubli.pdf", minimal_pdf("Fichier oublié")))
    if "zip_slip" in defects:
        members.append(("../../evil.pdf", minimal_pdf("evil")))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def acte_metadata_xml(nature: str, matiere: str, numero: str, objet: str, date_decision: date,
                      classification_date: date | None, document: str, annexes: list[str]) -> bytes:
    """acte.xml as an agent tool would write it (typologie carried as NomFichier prefix)."""
    codes = [c for c in matiere.split(".") if c]
    md = ActeMetadata(nature=nature, matiere=".".join(codes) if all(c.isdigit() for c in codes) else "0.0",
                      numero_interne=numero, objet=objet, date_decision=date_decision)
    root = X.root("Acte", Date=date_decision.isoformat(), NumeroInterne=numero, CodeNatureActe=str(md.nature_code))
    if len(codes) < 2 or not all(c.isdigit() for c in codes):
        # a malformed matière is kept as written, for the validator to report
        X.sub(root, "CodeMatiere1", CodeMatiere=codes[0] if codes else "")
        md = ActeMetadata(nature=nature, matiere="0.0", numero_interne=numero, objet=objet,
                          date_decision=date_decision)
        tmp = X.root("Acte")
        fill_donnees_acte(tmp, md, document, annexes, classification_date or date_decision)
        for c in list(tmp)[2:]:
            root.append(c)
    else:
        fill_donnees_acte(root, md, document, annexes, classification_date or date_decision)
    if classification_date is None:
        cdv = root.find(X.q("ClassificationDateVersion"))
        root.remove(cdv)
    return X.to_bytes(root)
