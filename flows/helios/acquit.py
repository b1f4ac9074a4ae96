"""PES_ACQUIT (Hélios' answer to a PES_Aller) and PES_Retour: read them, and build acquits.

An acquit is correlated to the PES_Aller by NomFic. The file is accepted only if every
ElementACQUIT has EtatAck = 1; otherwise we say which domain, bordereau, pièce and ligne failed,
with the NumAnoAck code and the libellé ("NNNN - text") Hélios gave.

``build_acquit`` is for the DGFiP simulator: from a PES_Aller and the findings of our own checks
it produces the acquit Hélios would send (valid against PES_V2_Acquit_Autonome_V2.xsd). The
"NNNN" numbers of its libellés are the simulator's own (9xxx), not DGFiP anomaly numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding, Report, UnreadableFile
from flows.helios import NS_ACQUIT, NS_RETOUR
from flows.helios.reader import pes_v
from flows.helios.xsdtext import error_fr, syntax_fr, xsd_parts

ACQUIT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "pes" / "PES_Acquit.xsd"

DOMAINES_ACK = {
    "0": "technique",
    "1": "signature technique",
    "2": "signature globale",
    "3": "signature du bordereau",
    "4": "pièce justificative",
    "5": "dépense",
    "6": "recette",
    "7": "rôle",
    "8": "budget",
    "9": "état de l'actif",
    "10": "état du passif",
    "11": "marché",
    "12": "facture",
    "99": "paramétrage",
}

# Our rule codes -> (NumAnoAck, simulator anomaly number). Unknown rules map to ERREUR_AUTRE.
RULE_TO_ANO: dict[str, tuple[str, str]] = {
    "XSD": ("ERREUR_SCHEMA_INCOMPLET", "9001"),
    "XML-MALFORME": ("ERREUR_SCHEMA_INCOMPLET", "9002"),
    "XML-DANGEREUX": ("ERREUR_SCHEMA_INCOMPLET", "9003"),
    "PES-RACINE": ("ERREUR_SCHEMA_INCOMPLET", "9004"),
    "ENCODAGE": ("ERREUR_ENCODING", "9010"),
    "PES-IDCOLL-SIRET": ("ERREUR_SIRET", "9020"),
    "PES-CODCOL-CODBUD": ("ERREUR_CODE_COLLECTIVITE_BUDGET", "9021"),
    "PES-VIDE": ("ERREUR_FLUX_VIDE", "9022"),
    "PES-NOMFIC": ("ERREUR_PES_PARAM", "9023"),
    "PES-NOMFIC-DOUBLON": ("ERREUR_AUTRE", "9024"),
    "PES-TAILLE": ("ERREUR_TAILLE_BORDEREAUX", "9025"),
    "PES-IDBORD-DOUBLON": ("ERREUR_DOUBLON_BORDEREAU", "9030"),
    "PES-NBRPCE": ("ERREUR_AUTRE", "9031"),
    "PES-NBRPCE-NUL": ("ERREUR_AUTRE", "9032"),
    "PES-MTCUMUL": ("ERREUR_AUTRE", "9033"),
    "PES-INFODEMAT": ("ERREUR_PES_SIGNATURE", "9034"),
    "PES-MONTANT-BORDEREAU": ("ERREUR_CUMUL_MONTANTS", "9035"),
    "PES-IDPCE-DOUBLON": ("ERREUR_DOUBLON_PIECE", "9036"),
    "PES-IDLIGNE-DOUBLON": ("ERREUR_DOUBLON_LIGNE", "9037"),
    "PES-PJREF": ("ERREUR_PJ", "9040"),
    "PES-PJ-DOUBLON": ("ERREUR_DOUBLON_PJ", "9041"),
    "SIGNATURE": ("ERREUR_SIGNATURE_BORDEREAU_INVALIDE", "9050"),
    "CERTIFICAT": ("ERREUR_CERTIFICAT", "9051"),
}
# Findings that make Hélios refuse the whole flux (DomaineAck 0, nothing else is integrated).
FLUX_RULES = {
    "XSD",
    "XML-MALFORME",
    "XML-DANGEREUX",
    "PES-RACINE",
    "ENCODAGE",
    "PES-IDCOLL-SIRET",
    "PES-CODCOL-CODBUD",
    "PES-VIDE",
    "PES-NOMFIC",
    "PES-NOMFIC-DOUBLON",
    "PES-TAILLE",
}


# ----------------------------------------------------------------------------- model


@dataclass
class AckError:
    code: str | None  # NumAnoAck, e.g. "ERREUR_SIRET"
    libelle: str | None  # LibelleAnoAck, "NNNN - text"


@dataclass
class AckLigne:
    numligne: str | None
    erreurs: list[AckError] = field(default_factory=list)


@dataclass
class AckPiece:
    numpiece: str | None
    erreurs: list[AckError] = field(default_factory=list)
    lignes: list[AckLigne] = field(default_factory=list)


@dataclass
class AckElement:
    domaine: str | None  # DomaineAck code
    domaine_fr: str
    accepted: bool
    numbord: str | None = None
    exercice: str | None = None
    idunique: str | None = None
    idmarche: str | None = None
    erreurs: list[AckError] = field(default_factory=list)
    pieces: list[AckPiece] = field(default_factory=list)

    def what(self) -> str:
        if self.numbord:
            return f"bordereau {self.numbord}" + (f" (exercice {self.exercice})" if self.exercice else "")
        if self.idunique:
            return f"PJ {self.idunique}"
        if self.idmarche:
            return f"marché {self.idmarche}"
        return "fichier"


@dataclass
class Acquit:
    nomfic: str | None
    typfic: str | None
    idcoll: str | None
    idpost: str | None
    codcol: str | None
    codbud: str | None
    dtestr: str | None
    accepted: bool
    elements: list[AckElement]
    summary_fr: str = ""

    @property
    def refusals(self) -> list[AckElement]:
        return [e for e in self.elements if not e.accepted]


# ----------------------------------------------------------------------------- parsing


def _errors(parent) -> list[AckError]:
    return [AckError(pes_v(e, "NumAnoAck"), pes_v(e, "LibelleAnoAck")) for e in parent.iterfind("Erreur")]


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def _fmt_error(err: AckError) -> str:
    parts = [p for p in (err.code, err.libelle) if p]
    return " — ".join(parts) if parts else "erreur sans libellé"


def summarize_acquit(a: Acquit) -> str:
    """French summary: accepted, or every refusal with domain, bordereau, pièce, ligne, code and libellé."""
    head = f"Acquit Hélios du fichier {a.nomfic or '(NomFic absent)'}"
    if a.accepted:
        counts: dict[str, int] = {}
        for e in a.elements:
            counts[e.domaine_fr] = counts.get(e.domaine_fr, 0) + 1
        detail = ", ".join(f"{n} élément(s) {d}" for d, n in counts.items())
        return f"{head} : fichier ACCEPTÉ par Hélios ({detail}).\n"
    lines = [f"{head} : fichier REFUSÉ par Hélios ({len(a.refusals)} élément(s) rejeté(s) sur {len(a.elements)})."]
    if not a.elements:
        lines[0] = f"{head} : aucun élément acquitté (acquit vide), à traiter comme un refus."
    for e in a.refusals:
        lines.append(f"- Domaine {e.domaine_fr} (DomaineAck {e.domaine}), {e.what()} : rejeté.")
        for err in e.erreurs:
            lines.append(f"    {_fmt_error(err)}")
        for p in e.pieces:
            for err in p.erreurs:
                lines.append(f"    pièce {p.numpiece} : {_fmt_error(err)}")
            for ln in p.lignes:
                for err in ln.erreurs:
                    lines.append(f"    pièce {p.numpiece} / ligne {ln.numligne} : {_fmt_error(err)}")
        if not e.erreurs and not any(p.erreurs or any(ln.erreurs for ln in p.lignes) for p in e.pieces):
            lines.append("    (Hélios n'a pas donné de motif)")
    accepted = [e for e in a.elements if e.accepted]
    if accepted:
        lines.append("Éléments acceptés : " + ", ".join(f"{e.domaine_fr} {e.what()}" for e in accepted) + ".")
    return "\n".join(lines) + "\n"


def _read_root(data: bytes, expected: str, what: str) -> etree._Element:
    """Parse safely and check the root element; UnreadableFile with a French message otherwise."""
    try:
        root = xmlsafe.parse_bytes(data)
    except (etree.XMLSyntaxError, xmlsafe.UnsafeXML) as exc:
        raise UnreadableFile(f"{what} illisible : {error_fr(exc) if isinstance(exc, etree.XMLSyntaxError) else exc}") from exc
    if etree.QName(root).localname != expected:
        raise UnreadableFile(f"Ce document n'est pas un {expected} (racine {root.tag}).")
    return root


def parse_acquit(data: bytes) -> Acquit:
    """Read a PES_ACQUIT (bytes as received)."""
    root = _read_root(data, "PES_ACQUIT", "Acquit PES")
    entete = root.find("EnTetePES")
    params = root.find("Enveloppe/Parametres")
    elements = []
    for el in root.iterfind("ACQUIT/ElementACQUIT"):
        dom = pes_v(el, "DomaineAck")
        pieces = []
        for dp in el.iterfind("DetailPiece"):
            pieces.append(
                AckPiece(
                    numpiece=pes_v(dp, "NumPiece"),
                    erreurs=_errors(dp),
                    lignes=[AckLigne(pes_v(dl, "NumLigne"), _errors(dl)) for dl in dp.iterfind("DetailLigne")],
                )
            )
        elements.append(
            AckElement(
                domaine=dom,
                domaine_fr=DOMAINES_ACK.get(dom or "", f"inconnu ({dom})"),
                accepted=_is_true(pes_v(el, "EtatAck")),
                numbord=pes_v(el, "NumBord"),
                exercice=pes_v(el, "ExerciceBord"),
                idunique=pes_v(el, "IdUnique"),
                idmarche=pes_v(el, "IdMarche"),
                erreurs=_errors(el),
                pieces=pieces,
            )
        )
    a = Acquit(
        nomfic=pes_v(params, "NomFic"),
        typfic=pes_v(params, "TypFic"),
        idcoll=pes_v(entete, "IdColl"),
        idpost=pes_v(entete, "IdPost"),
        codcol=pes_v(entete, "CodCol"),
        codbud=pes_v(entete, "CodBud"),
        dtestr=pes_v(entete, "DteStr"),
        accepted=bool(elements) and all(e.accepted for e in elements),
        elements=elements,
    )
    a.summary_fr = summarize_acquit(a)
    return a


@lru_cache(maxsize=1)
def acquit_schema() -> etree.XMLSchema:
    """The project's PES_ACQUIT XSD (same verdicts as the official acquit schema, proven by tests)."""
    return xmlsafe.schema_from_file(ACQUIT_SCHEMA_PATH)


def validate_acquit(path: str | Path, *, max_bytes: int = 64 * 1024 * 1024) -> Report:
    """Check a PES_ACQUIT against the acquit schema, then read it (kind "pes_acquit").

    A schema fault is an error (the file does not come from Hélios as Hélios writes it: do not
    trust its verdict); an acquit that refuses the PES is a warning naming what Hélios refused.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"Fichier introuvable : {path}")
    data = path.read_bytes()
    if not data:
        raise UnreadableFile(f"Le fichier est vide : {path}")
    report = Report(file=str(path), kind="pes_acquit")
    try:
        root = xmlsafe.parse_bytes(data, max_bytes=max_bytes)
    except xmlsafe.UnsafeXML as exc:
        raise UnreadableFile(f"{path.name} : {exc}") from None
    except etree.XMLSyntaxError as exc:
        raise UnreadableFile(f"{path.name} : l'acquit n'est pas un XML bien formé : {syntax_fr(exc.msg or str(exc))}") from None
    if etree.QName(root).localname != "PES_ACQUIT":
        raise UnreadableFile(f"{path.name} : ce document n'est pas un PES_ACQUIT (racine {root.tag}).")
    schema = acquit_schema()
    if not schema.validate(root):
        errors = list(schema.error_log)
        for err in errors[:50]:
            name, value, text = xsd_parts(err.message)
            report.add(
                Finding(
                    "ACQUIT-XSD",
                    f"{path.name} : l'acquit ne respecte pas le schéma PES_ACQUIT de la DGFiP : {text}.",
                    "Cet acquit ne vient pas d'Hélios tel quel (fichier modifié ou produit par un autre outil) :"
                    " ne vous fiez pas à son verdict, redemandez l'acquit au comptable ou à la plateforme de télétransmission.",
                    place=name,
                    value=value,
                    layer="xsd",
                    line=err.line or None,
                )
            )
        if len(errors) > 50:
            report.add(Finding("ACQUIT-XSD", f"{len(errors) - 50} autre(s) écart(s) au schéma non détaillé(s).",
                               "Corriger les erreurs ci-dessus.", layer="xsd"))
    a = parse_acquit(data)
    report.summary.update({"nomfic": a.nomfic, "accepte": a.accepted, "elements": len(a.elements),
                           "idcoll": a.idcoll, "resume": a.summary_fr,
                           "schema": "conforme" if not report.errors else "non conforme"})
    if not a.accepted:
        report.add(
            Finding(
                "ACQUIT-REFUS",
                f"{path.name} : Hélios a refusé le fichier {a.nomfic or '(NomFic absent)'} : "
                + "; ".join(f"{e.domaine_fr} {e.what()}" + (f" ({', '.join(_fmt_error(x) for x in e.erreurs)})" if e.erreurs else "")
                            for e in a.refusals)[:800],
                "Corriger le PES selon les motifs donnés puis le renvoyer sous un nouveau NomFic.",
                severity="warning",
                layer="metier",
            )
        )
    return report


def parse_retour(data: bytes) -> dict:
    """Read a PES_Retour (Hélios' feedback on mandats/titres): identifiers and a short French summary."""
    root = _read_root(data, "PES_Retour", "PES_Retour")
    params = root.find("Enveloppe/Parametres")
    entete = root.find("EnTetePES")
    out: dict = {
        "nomfic": pes_v(params, "NomFic"),
        "typfic": pes_v(params, "TypFic"),
        "dtestr": pes_v(entete, "DteStr"),
        "idpost": pes_v(entete, "IdPost"),
        "libelle_poste": (pes_v(entete, "LibellePoste") or "").strip() or None,
        "idcoll": pes_v(entete, "IdColl"),
        "codcol": pes_v(entete, "CodColl") or pes_v(entete, "CodCol"),
        "codbud": pes_v(entete, "CodBud"),
        "namespace_ok": etree.QName(root).namespace == NS_RETOUR,
        "domaines": [],
        "bordereaux": [],
    }
    for dom in root:
        if not isinstance(dom.tag, str):
            continue
        name = etree.QName(dom).localname
        if not name.startswith("PES_") or not name.endswith("Retour"):
            continue
        domain = {"PES_DepenseRetour": "dépense", "PES_RecetteRetour": "recette"}.get(name, name)
        out["domaines"].append(domain)
        for b in dom.iterfind("Bordereau"):
            pieces = []
            for p in b.iterfind("Piece"):
                info = p.find("InfoPiece")
                lignes = []
                for lp in p.iterfind("LigneDePiece"):
                    il = lp.find("BlocLignePiece/InfoLignePiece")
                    lignes.append(
                        {"idligne": pes_v(il, "IdLigne"), "etat": pes_v(il, "EtatLigPce"), "mtht": pes_v(il, "MtHT")}
                    )
                pieces.append(
                    {
                        "idpce": pes_v(info, "IdPce"),
                        "etat": pes_v(info, "EtatPce"),
                        "objet": pes_v(info, "Obj"),
                        "lignes": lignes,
                    }
                )
            out["bordereaux"].append(
                {
                    "domaine": domain,
                    "exercice": pes_v(b, "BlocBordereau/Exer"),
                    "idbord": pes_v(b, "BlocBordereau/IdBord"),
                    "typbord": pes_v(b, "BlocBordereau/TypBord"),
                    "pieces": pieces,
                }
            )
    n_pieces = sum(len(b["pieces"]) for b in out["bordereaux"])
    poste = out["idpost"] or "?"
    if out["libelle_poste"]:
        poste += f" {out['libelle_poste']}"
    text = [
        f"PES_Retour {out['typfic'] or '?'} ({out['nomfic'] or 'NomFic absent'}) du {out['dtestr'] or '?'}"
        f" pour la collectivité SIRET {out['idcoll'] or '?'} (poste comptable {poste}) :"
        f" {len(out['bordereaux'])} bordereau(x), {n_pieces} pièce(s) ({', '.join(out['domaines']) or 'aucun domaine'})."
    ]
    for b in out["bordereaux"]:
        for p in b["pieces"]:
            text.append(
                f"- bordereau {b['idbord']} ({b['exercice']}) / pièce {p['idpce']} : état {p['etat'] or '?'}, "
                f"{len(p['lignes'])} ligne(s)"
            )
    out["summary_fr"] = "\n".join(text) + "\n"
    return out


# ----------------------------------------------------------------------------- building

_PLACE_BORD = re.compile(r"bordereau (\S+)")
_PLACE_PIECE = re.compile(r"pièce (\S+)")
_PLACE_LIGNE = re.compile(r"ligne (\S+)")

_SAFE = {
    "IdPost": (re.compile(r"^(?:[0-9]{6,7}|02[AB][0-9]{3,4})$"), "999999"),
    "IdColl": (re.compile(r"^[0-9]{0,14}$"), ""),
    "CodCol": (re.compile(r"^(?!000$)[0-9]{3}$"), "999"),
    "CodBud": (re.compile(r"^[0-9A-Z][0-9]$"), "00"),
    "DteStr": (re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), None),
}


def _rule_key(rule: str, layer: str = "") -> str:
    """Our rule code -> key of RULE_TO_ANO (signature findings come from flows.signature)."""
    if rule in RULE_TO_ANO:
        return rule
    upper = rule.upper()
    if "CERTIFICAT" in upper or "CERT-" in upper:
        return "CERTIFICAT"
    if "SIGNATURE" in upper or upper.startswith("SIG") or layer == "signature":
        return "SIGNATURE"
    if upper.startswith("ENCODAGE"):
        return "ENCODAGE"
    return rule


def _ano(f: Finding) -> tuple[str, str]:
    code, num = RULE_TO_ANO.get(_rule_key(f.rule, f.layer), ("ERREUR_AUTRE", "9099"))
    text = f.message
    if f.value:
        text += f" (valeur : {f.value})"
    return code, f"{num} - {text}"[:500]


def _header_of(pes: bytes) -> tuple[dict[str, str | None], list[dict], list[str]]:
    """Header fields, bordereaux (domain, IdBord, Exer) and PJ ids of a PES, as best we can."""
    fields: dict[str, str | None] = {}
    bordereaux: list[dict] = []
    pjs: list[str] = []
    try:
        root = xmlsafe.parse_bytes(pes)
    except (etree.XMLSyntaxError, xmlsafe.UnsafeXML, ValueError):
        root = None
    if root is not None:
        for name in ("TypFic", "NomFic"):
            fields[name] = pes_v(root, f"Enveloppe/Parametres/{name}")
        fields["Sigle"] = pes_v(root, "Enveloppe/Emetteur/Sigle")
        for name in ("DteStr", "IdPost", "IdColl", "CodCol", "CodBud", "LibelleColBud"):
            fields[name] = pes_v(root, f"EnTetePES/{name}")
        for dom, code in (("PES_DepenseAller", "5"), ("PES_RecetteAller", "6")):
            for b in root.iterfind(f"{dom}/Bordereau"):
                bordereaux.append(
                    {
                        "domaine": code,
                        "idbord": pes_v(b, "BlocBordereau/IdBord"),
                        "exer": pes_v(b, "BlocBordereau/Exer"),
                        "id": b.get("Id"),
                    }
                )
        pjs = [v for v in (pes_v(pj, "IdUnique") for pj in root.iterfind("PES_PJ/PJ")) if v]
        return fields, bordereaux, pjs
    # Unparsable: pick the header values with a regex (they sit in the first kilobytes).
    text = pes[:65536].decode("latin-1", errors="replace")
    for name in ("TypFic", "NomFic", "DteStr", "IdPost", "IdColl", "CodCol", "CodBud", "LibelleColBud"):
        m = re.search(rf"<{name}\s+V=\"([^\"]*)\"", text)
        fields[name] = m.group(1) if m else None
    return fields, bordereaux, pjs


def _add_value(parent, name: str, value: object) -> None:
    etree.SubElement(parent, name).set("V", str(value))


def _add_error(parent, code: str, libelle: str) -> None:
    err = etree.SubElement(parent, "Erreur")
    _add_value(err, "NumAnoAck", code)
    _add_value(err, "LibelleAnoAck", libelle)


def _digits(value: str | None, n: int) -> str | None:
    return value if value and value.isdigit() and len(value) <= n else None


def build_acquit(pes: bytes, findings: Iterable[Finding], *, today: dt.date | None = None) -> bytes:
    """The PES_ACQUIT Hélios would answer to ``pes`` given our ``findings`` (errors refuse, warnings don't)."""
    findings = [f for f in findings if f.severity == "error"]
    fields, bordereaux, pjs = _header_of(pes)
    today = today or dt.date.today()

    root = etree.Element(f"{{{NS_ACQUIT}}}PES_ACQUIT", nsmap={"n": NS_ACQUIT})
    env = etree.SubElement(root, "Enveloppe")
    params = etree.SubElement(env, "Parametres")
    _add_value(params, "Version", 2)
    _add_value(params, "TypFic", (fields.get("TypFic") or "PESALR2")[:32])
    nomfic = (fields.get("NomFic") or "").strip()
    _add_value(params, "NomFic", (nomfic or "NOMFIC_ABSENT")[:100])
    em = etree.SubElement(env, "Emetteur")
    _add_value(em, "Sigle", "DGFIP")
    _add_value(em, "Adresse", "HELIOS (simulateur demat)")
    if fields.get("Sigle"):
        rec = etree.SubElement(env, "Recepteur")
        _add_value(rec, "Sigle", fields["Sigle"][:32])
    head = etree.SubElement(root, "EnTetePES")
    for name in ("DteStr", "IdPost", "IdColl", "CodCol", "CodBud"):
        pattern, fallback = _SAFE[name]
        value = fields.get(name) or ""
        if not pattern.match(value):
            value = today.isoformat() if name == "DteStr" else fallback
        _add_value(head, name, value)
    libelle = (fields.get("LibelleColBud") or "").strip()
    if libelle and libelle.strip("0") and libelle not in (".", "nc"):
        _add_value(head, "LibelleColBud", libelle[:38])
    ack = etree.SubElement(root, "ACQUIT")
    _add_value(etree.SubElement(ack, "EnTeteAcquit"), "IdVer", 2)

    flux_errors = [f for f in findings if _rule_key(f.rule, f.layer) in FLUX_RULES or f.layer in ("lecture", "encodage", "xsd")]
    if flux_errors or not (bordereaux or pjs):
        el = etree.SubElement(ack, "ElementACQUIT")
        _add_value(el, "DomaineAck", 0)
        _add_value(el, "EtatAck", 0 if (flux_errors or findings) else 1)
        for f in flux_errors or findings:
            _add_error(el, *_ano(f))
        return etree.tostring(root, encoding="ISO-8859-1", xml_declaration=True, pretty_print=True)

    # Per-bordereau elements; findings are attached through their place ("bordereau X / pièce Y / ligne Z").
    by_bord: dict[str, list[Finding]] = {}
    pj_errors: dict[str, list[Finding]] = {}
    unplaced: list[Finding] = []
    for f in findings:
        if f.rule == "PES-PJ-DOUBLON" and f.value:
            pj_errors.setdefault(f.value, []).append(f)
            continue
        m = _PLACE_BORD.search(f.place or "")
        if m:
            by_bord.setdefault(m.group(1), []).append(f)
        else:
            unplaced.append(f)
    for i, b in enumerate(bordereaux, start=1):
        label = b["idbord"] or f"n°{i}"
        mine = list(by_bord.get(label, []))
        if b.get("id") and b["id"] != label:  # signature findings may name the bordereau by its Id
            mine += by_bord.get(b["id"], [])
        signature = [f for f in mine if _rule_key(f.rule, f.layer) in ("SIGNATURE", "CERTIFICAT")]
        other = [f for f in mine if f not in signature]
        if i == 1:
            other += unplaced
        if signature:
            sig = etree.SubElement(ack, "ElementACQUIT")
            _add_value(sig, "DomaineAck", 3)
            _add_value(sig, "EtatAck", 0)
            _bord_ids(sig, b)
            for f in signature:
                _add_error(sig, *_ano(f))
        el = etree.SubElement(ack, "ElementACQUIT")
        _add_value(el, "DomaineAck", b["domaine"])
        _add_value(el, "EtatAck", 0 if (other or signature) else 1)
        _bord_ids(el, b)
        pieces: dict[str, dict[str, list[Finding]]] = {}
        for f in other:
            pm = _PLACE_PIECE.search(f.place or "")
            if not pm:
                _add_error(el, *_ano(f))
                continue
            lm = _PLACE_LIGNE.search(f.place or "")
            pieces.setdefault(pm.group(1), {}).setdefault(lm.group(1) if lm else "", []).append(f)
        for numpiece, lines in pieces.items():
            dp = etree.SubElement(el, "DetailPiece")
            _add_value(dp, "NumPiece", _digits(numpiece, 13) or "0")
            for f in lines.get("", []):
                _add_error(dp, *_ano(f))
            for numligne, fs in lines.items():
                if not numligne:
                    continue
                dl = etree.SubElement(dp, "DetailLigne")
                _add_value(dl, "NumLigne", _digits(numligne, 13) or "0")
                for f in fs:
                    _add_error(dl, *_ano(f))
    for idu in dict.fromkeys(pjs):
        el = etree.SubElement(ack, "ElementACQUIT")
        _add_value(el, "DomaineAck", 4)
        errs = pj_errors.get(idu, [])
        _add_value(el, "EtatAck", 0 if errs else 1)
        _add_value(el, "IdUnique", idu[:50] if re.fullmatch(r"[0-9A-Za-z]{0,50}", idu) else "")
        for f in errs:
            _add_error(el, *_ano(f))
    return etree.tostring(root, encoding="ISO-8859-1", xml_declaration=True, pretty_print=True)


def _bord_ids(el, b: dict) -> None:
    numbord = _digits(b.get("idbord"), 7)
    exer = _digits(b.get("exer"), 4)
    if numbord:
        _add_value(el, "NumBord", numbord)
    if exer:
        _add_value(el, "ExerciceBord", exer)
