"""Documents budgétaires (actes of nature BF): the TotEM XML « DocumentBudgetaire ».

A budget acte may carry its document as XML (DocumentBudgetaire, namespace
http://www.minefi.gouv.fr/cp/demat/docbudgetaire, written by TotEM or a financial software and
« scellé »). The préfecture's budget control reads it; demat checks, before transmission:

- the schema: the project's own schemas/budget/DocumentBudgetaire.xsd (root, header, Budget,
  EnTeteBudget, BlocBudget, LigneBudget structure, Scellement; annexes not controlled);
- the collectivité's identifiers: IdColl (SIRET, or SIREN) and IdEtab (SIRET), with their keys,
  and that they belong to the collectivité transmitting (its SIREN), when known;
- the exercise (BlocBudget/Exer) against the date of the decision;
- the Scellement, when present: MD5 and SHA-1 of the flux without its Scellement block,
  canonicalised (C14N 1.0 inclusive, without comments), as the schema's documentation says.

Findings are French and name the file, the rule and the fix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding
from flows.helios.validate import siret_ok, siret_problem
from flows.helios.xsdtext import syntax_fr, xsd_parts

NS_BUDGET = "http://www.minefi.gouv.fr/cp/demat/docbudgetaire"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "budget" / "DocumentBudgetaire.xsd"
MAX_BYTES = 150 * 1024 * 1024
NATDEC = {"01": "budget primitif", "02": "décision modificative", "03": "budget supplémentaire",
          "09": "compte administratif"}
MAX_XSD_FINDINGS = 30


def _q(tag: str) -> str:
    return f"{{{NS_BUDGET}}}{tag}"


@lru_cache(maxsize=1)
def budget_schema() -> etree.XMLSchema:
    return xmlsafe.schema_from_file(SCHEMA_PATH)


# ----------------------------------------------------------------------------- scellement


def seal_digests(root: etree._Element) -> tuple[str, str]:
    """(md5, sha1) in lowercase hex of the document without its Scellement, C14N inclusive."""
    doc = etree.fromstring(etree.tostring(root), xmlsafe.parser())
    for el in doc.findall(_q("Scellement")):
        doc.remove(el)
    octets = etree.tostring(doc, method="c14n", exclusive=False, with_comments=False)
    # the format's own integrity seal (TotEM), not a security use
    return (hashlib.md5(octets, usedforsecurity=False).hexdigest(),
            hashlib.sha1(octets, usedforsecurity=False).hexdigest())


def seal(xml: bytes, when: datetime | None = None) -> bytes:
    """Seal a DocumentBudgetaire (insert or replace its Scellement), as TotEM does before sending."""
    root = xmlsafe.parse_bytes(xml)
    for el in root.findall(_q("Scellement")):
        root.remove(el)
    md5, sha1 = seal_digests(root)
    sc = etree.Element(_q("Scellement"))
    sc.set("date", (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S"))
    sc.set("md5", md5)
    sc.set("sha1", sha1)
    anchor = root.find(_q("EnTeteDocBudgetaire"))
    if anchor is not None:
        anchor.addprevious(sc)
    else:
        root.insert(1, sc)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _as_bytes(text: str) -> bytes | None:
    """A digest written in hex or in base64 (editors differ), as bytes; None if neither."""
    clean = "".join((text or "").split())
    try:
        return bytes.fromhex(clean)
    except ValueError:
        pass
    try:
        return base64.b64decode(clean + "=" * (-len(clean) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None


# ----------------------------------------------------------------------------- generation (tests, demo)


def generate_budget(*, siret: str, exer: int, natdec: str = "01", libelle: str = "COMMUNE DE DEMAT",
                    idpost: str = "040012", codcoll: str = "293", codbud: str = "00",
                    nomenclature: str = "M57-M57", lines: int = 3, sealed: bool = False,
                    dte_str: date | None = None) -> bytes:
    """A small DocumentBudgetaire valid against the project schema (and, for the parts it covers,
    written as TotEM writes them)."""
    b = etree.Element(_q("DocumentBudgetaire"), nsmap={None: NS_BUDGET})

    def leaf(parent, tag, value):
        el = etree.SubElement(parent, _q(tag))
        el.set("V", str(value))
        return el

    leaf(b, "VersionSchema", "95")
    head = etree.SubElement(b, _q("EnTeteDocBudgetaire"))
    leaf(head, "DteStr", (dte_str or date(exer, 1, 15)).isoformat())
    leaf(head, "LibellePoste", "TRESORERIE DE DEMAT")
    leaf(head, "IdPost", idpost)
    leaf(head, "LibelleColl", libelle)
    leaf(head, "IdColl", siret)
    leaf(head, "NatCEPL", "Commune")
    budget = etree.SubElement(b, _q("Budget"))
    eb = etree.SubElement(budget, _q("EnTeteBudget"))
    leaf(eb, "LibelleEtab", "BUDGET PRINCIPAL")
    leaf(eb, "IdEtab", siret)
    leaf(eb, "CodColl", codcoll)
    leaf(eb, "CodBud", codbud)
    leaf(eb, "Nomenclature", nomenclature)
    bb = etree.SubElement(budget, _q("BlocBudget"))
    leaf(bb, "NatDec", natdec)
    leaf(bb, "Exer", exer)
    leaf(bb, "BudgPrec", 1)
    leaf(bb, "ReprRes", 1)
    leaf(bb, "NatFonc", 1)
    leaf(bb, "CodTypBud", "P")
    etree.SubElement(budget, _q("InformationsGenerales"))
    for i in range(lines):
        ln = etree.SubElement(budget, _q("LigneBudget"))
        leaf(ln, "Nature", ("6068", "7411", "2313")[i % 3])
        leaf(ln, "CodRD", "D" if i % 3 != 1 else "R")
        leaf(ln, "MtPrev", f"{Decimal(1250 * (i + 1)):.2f}")
        leaf(ln, "OpBudg", 0)
    xml = etree.tostring(b, xml_declaration=True, encoding="UTF-8")
    return seal(xml, datetime(exer, 1, 15, 10, 0, tzinfo=UTC)) if sealed else xml


# ----------------------------------------------------------------------------- validation


def validate_budget(data: bytes, *, name: str = "budget.xml", siren: str | None = None,
                    decision_date: date | None = None) -> list[Finding]:
    """Every finding about one DocumentBudgetaire (empty list: it may be transmitted)."""
    place = f"document budgétaire « {name} »"
    out: list[Finding] = []

    def add(rule, message, fix, value="", *, severity="error", layer="metier", line=None, where=place):
        out.append(Finding(rule, f"{name} : {message}", fix, where, str(value or ""), severity=severity,
                           layer=layer, line=line))

    try:
        root = xmlsafe.parse_bytes(data, max_bytes=MAX_BYTES)
    except xmlsafe.UnsafeXML as exc:
        add("BUDGET-XML-DANGEREUX", str(exc), "Exporter de nouveau le budget depuis TotEM ou le logiciel financier :"
            " un document budgétaire ne contient ni DOCTYPE ni entité.", layer="lecture")
        return out
    except etree.XMLSyntaxError as exc:
        add("ACTES-XML-ILLISIBLE", f"le document budgétaire XML est illisible : {syntax_fr(exc.msg or str(exc))}",
            "Exporter de nouveau le budget depuis TotEM ou le logiciel financier (fichier tronqué ou modifié à la main ?).",
            layer="lecture", line=exc.lineno or None)
        return out
    if root.tag != _q("DocumentBudgetaire"):
        qn = etree.QName(root)
        add("BUDGET-RACINE",
            f"ce XML n'est pas un document budgétaire : racine « {qn.localname} »"
            f" (espace de noms « {qn.namespace or 'aucun'} »), attendu DocumentBudgetaire de l'espace {NS_BUDGET}.",
            "Joindre le flux XML produit par TotEM (document budgétaire scellé), ou le budget en PDF.",
            qn.localname, layer="xsd")
        return out

    schema = budget_schema()
    if not schema.validate(root):
        errors = list(schema.error_log)
        for err in errors[:MAX_XSD_FINDINGS]:
            element, value, text = xsd_parts(err.message)
            add("BUDGET-XSD", f"non conforme au schéma des documents budgétaires : {text}.",
                "Corriger le budget dans TotEM ou le logiciel financier puis l'exporter et le sceller de nouveau.",
                value, layer="xsd", line=err.line or None, where=f"{place} / {element}" if element else place)
        if len(errors) > MAX_XSD_FINDINGS:
            add("BUDGET-XSD", f"{len(errors) - MAX_XSD_FINDINGS} autre(s) écart(s) au schéma non détaillé(s).",
                "Corriger les erreurs ci-dessus.", layer="xsd")

    def v(path: str) -> tuple[str | None, int | None]:
        el = root.find("/".join(_q(p) for p in path.split("/")))
        return (None, None) if el is None else (el.get("V"), el.sourceline)

    # identifiers of the collectivité
    for path, label, allow_siren in (("EnTeteDocBudgetaire/IdColl", "IdColl (en-tête du document)", True),
                                     ("Budget/EnTeteBudget/IdEtab", "IdEtab (en-tête du budget)", False)):
        value, line = v(path)
        if value is None or not value.isdigit():
            continue  # absent (optional) or already refused by the schema
        if allow_siren and len(value) == 9:
            from stdnum.fr import siren as stdnum_siren

            if not stdnum_siren.is_valid(value):
                add("BUDGET-SIREN", f"{label} {value} n'est pas un SIREN valide : sa clé de contrôle est fausse.",
                    "Reprendre le SIREN exact de la collectivité (répertoire SIRENE) dans TotEM.", value, line=line,
                    where=f"{place} / {path}")
            got = value
        elif not siret_ok(value):
            why, fix = siret_problem(value)
            add("BUDGET-SIRET", f"{label} n'est pas un SIRET valide : {why}.", fix + " (dans TotEM, puis resceller)",
                value, line=line, where=f"{place} / {path}")
            continue
        else:
            got = value
        if siren and got[:9] != siren:
            add("BUDGET-COLLECTIVITE",
                f"{label} {value} désigne le SIREN {got[:9]}, pas la collectivité qui transmet (SIREN {siren}) :"
                " la préfecture rejettera ou rattachera le budget à une autre collectivité.",
                "Vérifier que le bon budget est joint à l'acte, ou corriger l'identifiant dans TotEM.",
                value, line=line, where=f"{place} / {path}")

    # exercise against the decision
    exer, line = v("Budget/BlocBudget/Exer")
    natdec, _ = v("Budget/BlocBudget/NatDec")
    report_exer = exer.strip() if exer else ""
    if report_exer.isdigit() and len(report_exer) == 4 and decision_date is not None:
        year = int(report_exer)
        d = decision_date.year
        allowed = {"09": (d - 1, d)}.get(natdec or "", (d - 1, d, d + 1))
        what = NATDEC.get(natdec or "", "document budgétaire")
        if year not in allowed:
            add("BUDGET-EXERCICE",
                f"l'exercice {year} du {what} ne correspond pas à la date de la décision"
                f" ({decision_date.strftime('%d/%m/%Y')}) : exercice attendu "
                + " ou ".join(str(a) for a in allowed) + ".",
                "Vérifier que le document joint est celui de l'exercice voté (BlocBudget/Exer), ou corriger la date"
                " de la décision dans les métadonnées de l'acte.", report_exer, line=line,
                where=f"{place} / BlocBudget / Exer")

    # the Scellement, when present
    sc = root.find(_q("Scellement"))
    if sc is not None:
        md5, sha1 = seal_digests(root)
        want = {"md5": bytes.fromhex(md5), "sha1": bytes.fromhex(sha1)}
        bad = []
        for attr in ("md5", "sha1"):
            found = sc.get(attr)
            if found is None:
                continue  # reported by the schema
            if _as_bytes(found) != want[attr]:
                bad.append(attr.upper().replace("SHA1", "SHA-1"))
        if bad:
            add("BUDGET-SCELLEMENT",
                f"le scellement ne correspond plus au contenu (empreinte {' et '.join(bad)} différente) :"
                " le document budgétaire a été modifié après avoir été scellé.",
                "Reprendre le flux scellé d'origine exporté par TotEM, ou le sceller de nouveau après correction.",
                sc.get("sha1") or "", line=sc.sourceline, where=f"{place} / Scellement")
    return out


def summary(data: bytes) -> dict:
    """What the agent sees of a budget (for reports): collectivité, exercise, nature, lines."""
    try:
        root = xmlsafe.parse_bytes(data, max_bytes=MAX_BYTES)
    except (xmlsafe.UnsafeXML, etree.XMLSyntaxError):
        return {}

    def v(path):
        el = root.find("/".join(_q(p) for p in path.split("/")))
        return None if el is None else el.get("V")

    return {
        "collectivite": v("EnTeteDocBudgetaire/LibelleColl"),
        "idcoll": v("EnTeteDocBudgetaire/IdColl"),
        "exercice": v("Budget/BlocBudget/Exer"),
        "nature_decision": NATDEC.get(v("Budget/BlocBudget/NatDec") or "", v("Budget/BlocBudget/NatDec")),
        "lignes": len(root.findall(f"{_q('Budget')}/{_q('LigneBudget')}")),
        "scelle": root.find(_q("Scellement")) is not None,
    }
