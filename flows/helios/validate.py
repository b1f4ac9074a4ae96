"""Validate a PES_Aller before it leaves for Hélios: encoding, schema and business rules, together.

Three layers, all reported in one Report (kind "pes_aller"):

(a) reading and encoding: DOCTYPE/entities refused, well-formedness, ISO-8859-1 expected, a UTF-8
    file declared Latin-1 (or bytes invalid for the declared encoding) named by line and byte;
(b) schema: the project's own XSD (schemas/pes/PES_Aller.xsd), validated while streaming
    (lxml iterparse with schema=...): memory stays flat for a 500 MB file;
(c) business rules Hélios applies on arrival (docs: ../shared/FACTS.md §2 and the annotations of
    the official DGFiP schema): NomFic unique per collectivité, IdColl SIRET key, IdBord unique
    per year and type, NbrPce >= 1 and equal to the pièces present, InfoDematerialisee consistent
    with the signatures, MtCumulAnnuel when InfoDematerialisee=1, PJRef pointing at a PJ, PJ
    IdUnique unique, amounts (MtBordHT vs sum of the lines: a warning, Hélios' exact rule is not
    published).

Tiers rules (CP, IBAN, BIC, CatTiers/NatJur, ...) belong to flows.quality (the tiers gate).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from lxml import etree
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret

from flows import xmlsafe
from flows.findings import Finding, Report, UnreadableFile
from flows.helios import NS_ALLER
from flows.helios.encoding import check_encoding
from flows.helios.reader import (
    CONTAINER_TAGS,
    PJ,
    BordereauEnd,
    BordereauHead,
    Domaine,
    GlobalSignature,
    Header,
    PesItem,
    PesStreamReader,
    Piece,
)
from flows.helios.xsdtext import error_fr, syntax_fr, xsd_parts

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "pes" / "PES_Aller.xsd"
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # hard cap of what we accept to read at all
HELIOS_UPLOAD_CAP = 128 * 1024 * 1024  # typical upload cap on the Hélios side (warning above)
MAX_LOCATED_XSD_ERRORS = 50
MAX_UNSIGNED_LISTED = 1000


@lru_cache(maxsize=1)
def project_schema() -> etree.XMLSchema:
    """The project's PES_Aller XSD, compiled once."""
    return xmlsafe.schema_from_file(SCHEMA_PATH)


def siret_ok(value: str) -> bool:
    """SIRET key (Luhn, with the La Poste exception handled by python-stdnum)."""
    return bool(value) and value.isdigit() and len(value) == 14 and stdnum_siret.is_valid(value)


def siret_problem(value: str) -> tuple[str, str]:
    """(what is wrong, how to fix it) for a SIRET that fails: length, SIREN key or SIRET key.

    A SIRET is the SIREN (9 digits, its own Luhn key) followed by the NIC (5 digits); the whole
    14 digits carry a second key. Naming the part that fails tells the agent where to look."""
    value = value or ""
    if not (value.isdigit() and len(value) == 14):
        return (
            f"il doit compter exactement 14 chiffres (lu : {len(value)} caractère(s)"
            + ("" if value.isdigit() else ", dont des caractères qui ne sont pas des chiffres") + ")",
            "Reprendre le SIRET exact de la collectivité (budget concerné) dans le répertoire SIRENE.",
        )
    if not stdnum_siren.is_valid(value[:9]):
        return (
            f"la partie SIREN (9 premiers chiffres : {value[:9]}) a une clé de contrôle fausse,"
            " ce n'est donc pas un SIREN existant",
            "Vérifier les 9 premiers chiffres (SIREN de la collectivité) dans le répertoire SIRENE :"
            " l'erreur est dans le SIREN, pas dans le NIC.",
        )
    return (
        f"le SIREN {value[:9]} est correct mais la clé du SIRET (14 chiffres, NIC {value[9:]}) est fausse",
        "Vérifier les 5 derniers chiffres (NIC de l'établissement ou du budget) dans le répertoire SIRENE.",
    )


def _dec(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(value.strip())
    except (InvalidOperation, AttributeError):
        return None
    return d if d.is_finite() else None


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def _label(value: str | None, position: int) -> str:
    return value if value else f"n°{position}"


class PesCollector:
    """Receives reader items one by one: keeps counters and checks the business rules on the fly.

    Memory: a few counters, the set of (exercice, type, IdBord) seen, and the PJRef/IdUnique sets.
    """

    def __init__(self, known_nomfics: set[str] | None = None, *, check_rules: bool = True) -> None:
        self.known_nomfics = known_nomfics
        self.check_rules = check_rules
        self.findings: list[Finding] = []
        self.header: Header | None = None
        self.domains: dict[str, Domaine] = {}
        self.bordereaux = 0
        self.pieces = 0
        self.lignes = 0
        self.tiers = 0
        self.tiers_keys: set[tuple] = set()
        self.total = Decimal("0")
        self.declared_total = Decimal("0")
        self.signed_bordereaux = 0
        self.global_signature = False
        self.pj_ids: dict[str, int] = {}
        self.pj_count = 0
        self.pjrefs: dict[str, str] = {}  # IdUnique -> first place that references it
        self.per_domain: dict[str, dict[str, int]] = {}
        self._bord_keys: dict[tuple, str] = {}
        self._head: BordereauHead | None = None
        self._bord_sum = Decimal("0")
        self._bord_pieces: set[str] = set()
        self._unsigned: list[tuple[str, int | None]] = []
        self._unsigned_count = 0

    # -- helpers
    def _add(self, rule: str, message: str, fix: str, place: str = "", value: str | None = "", *, severity="error", line=None):
        if self.check_rules:
            self.findings.append(
                Finding(rule, message, fix, place, value or "", severity=severity, layer="metier", line=line)
            )

    def _bord_place(self, head: BordereauHead | None, index: int) -> str:
        idbord = head.idbord if head is not None else None
        domain = head.domain if head is not None else ""
        kind = "mandats" if domain == "depense" else "titres" if domain == "recette" else ""
        text = f"bordereau {_label(idbord, index)}"
        return f"{text} ({kind})" if kind else text

    # -- items
    def feed(self, item: PesItem) -> None:
        if isinstance(item, Piece):
            self._piece(item)
        elif isinstance(item, BordereauHead):
            self._bordereau_head(item)
        elif isinstance(item, BordereauEnd):
            self._bordereau_end(item)
        elif isinstance(item, PJ):
            self._pj(item)
        elif isinstance(item, Header):
            self._header(item)
        elif isinstance(item, Domaine):
            self.domains[item.domain] = item
        elif isinstance(item, GlobalSignature):
            self.global_signature = True

    def _header(self, h: Header) -> None:
        self.header = h
        if h.root_tag != f"{{{NS_ALLER}}}PES_Aller":
            self._add(
                "PES-RACINE",
                f"La racine du fichier n'est pas un PES_Aller de l'espace de noms attendu ({h.root_tag}).",
                f'Déclarer la racine <n:PES_Aller xmlns:n="{NS_ALLER}">.',
                "racine",
                h.root_tag,
                line=1,
            )
        if not h.nomfic:
            self._add(
                "PES-NOMFIC",
                "NomFic (Enveloppe/Parametres/NomFic) est absent ou vide : Hélios ne pourra pas relier l'acquit au fichier.",
                "Renseigner un NomFic unique pour la collectivité (100 caractères au plus).",
                "enveloppe / Parametres",
                line=h.line,
            )
        elif self.known_nomfics is not None and h.nomfic in self.known_nomfics:
            self._add(
                "PES-NOMFIC-DOUBLON",
                "Ce NomFic a déjà été envoyé pour cette collectivité : Hélios rejettera le fichier comme doublon.",
                "Donner au fichier un NomFic jamais utilisé (ajouter par exemple la date et un numéro d'ordre).",
                "enveloppe / Parametres / NomFic",
                h.nomfic,
                line=h.line,
            )
        if h.idcoll is None:
            pass  # absent: reported by the schema
        elif not siret_ok(h.idcoll):
            why, fix = siret_problem(h.idcoll)
            self._add(
                "PES-IDCOLL-SIRET",
                f"IdColl n'est pas un SIRET valide : {why}. Hélios rejettera le flux (ERREUR_SIRET).",
                fix,
                "en-tête (EnTetePES / IdColl)",
                h.idcoll,
                line=h.line,
            )

    def _demat(self, domain: str) -> bool:
        d = self.domains.get(domain)
        return d is not None and _is_true(d.info_dematerialisee)

    def _bordereau_head(self, h: BordereauHead) -> None:
        self._head = h
        self._bord_sum = Decimal("0")
        self._bord_pieces = set()
        place = self._bord_place(h, h.index)
        key = (h.domain, h.exer, h.typbord, h.idbord)
        if h.idbord:
            if key in self._bord_keys:
                self._add(
                    "PES-IDBORD-DOUBLON",
                    f"IdBord {h.idbord} apparaît deux fois pour l'exercice {h.exer} et le type {h.typbord}"
                    f" (déjà utilisé par le {self._bord_keys[key]}) : Hélios rejette le doublon (ERREUR_DOUBLON_BORDEREAU).",
                    "Numéroter les bordereaux de façon unique par exercice et par type.",
                    place,
                    h.idbord,
                    line=h.line,
                )
            else:
                self._bord_keys[key] = f"bordereau n°{h.index} du fichier"
        nbr = _dec(h.nbrpce)
        if nbr is not None and nbr < 1:
            self._add(
                "PES-NBRPCE-NUL",
                "NbrPce doit être supérieur ou égal à 1 : Hélios rejette le flux.",
                "Indiquer le nombre de pièces réellement portées par le bordereau.",
                place,
                h.nbrpce,
                line=h.line,
            )
        if self._demat(h.domain):
            cumul = _dec(h.mtcumulannuel)
            if cumul is None or cumul <= 0:
                self._add(
                    "PES-MTCUMUL",
                    "MtCumulAnnuel est obligatoire et strictement positif quand InfoDematerialisee vaut 1 :"
                    " Hélios rejette le bordereau.",
                    "Renseigner le cumul annuel des bordereaux (montant > 0) dans BlocBordereau.",
                    place,
                    h.mtcumulannuel or "(absent)",
                    line=h.line,
                )

    def _piece(self, p: Piece) -> None:
        self.pieces += 1
        head = self._head if self._head is not None and self._head.index == p.bordereau_index else None
        bplace = self._bord_place(head, p.bordereau_index)
        pplace = f"{bplace} / pièce {_label(p.idpce, p.index)}"
        if p.idpce:
            if p.idpce in self._bord_pieces:
                self._add(
                    "PES-IDPCE-DOUBLON",
                    f"La pièce {p.idpce} apparaît deux fois dans le bordereau (ERREUR_DOUBLON_PIECE).",
                    "Numéroter les pièces de façon unique dans le bordereau.",
                    pplace,
                    p.idpce,
                    line=p.line,
                )
            self._bord_pieces.add(p.idpce)
        for support, idu in p.pjrefs:
            if support == "01" and idu:
                self.pjrefs.setdefault(idu, pplace)
        seen_lines: set[str] = set()
        for ln in p.lignes:
            self.lignes += 1
            amount = _dec(ln.mtht)
            if amount is not None:
                self._bord_sum += amount
                self.total += amount
            lplace = f"{pplace} / ligne {_label(ln.idligne, ln.index)}"
            if ln.idligne:
                if ln.idligne in seen_lines:
                    self._add(
                        "PES-IDLIGNE-DOUBLON",
                        f"La ligne {ln.idligne} apparaît deux fois dans la pièce (ERREUR_DOUBLON_LIGNE).",
                        "Numéroter les lignes de pièce 1, 2, 3…",
                        lplace,
                        ln.idligne,
                        line=ln.line,
                    )
                seen_lines.add(ln.idligne)
            for support, idu in ln.pjrefs:
                if support == "01" and idu:
                    self.pjrefs.setdefault(idu, lplace)
            self.tiers += ln.n_tiers
            for t in ln.tiers:
                if len(self.tiers_keys) < 1_000_000:
                    self.tiers_keys.add((t.idtiers, t.nom, t.prenom, t.cp))

    def _bordereau_end(self, e: BordereauEnd) -> None:
        self.bordereaux += 1
        dom = self.per_domain.setdefault(e.domain, {"bordereaux": 0, "pieces": 0})
        dom["bordereaux"] += 1
        dom["pieces"] += e.pieces
        head = self._head if self._head is not None and self._head.index == e.index else None
        place = self._bord_place(head, e.index)
        line = head.line if head else e.line
        signed = e.signed or self.global_signature
        if e.signed:
            self.signed_bordereaux += 1
        if head is not None:
            declared = _dec(head.mtbordht)
            if declared is not None:
                self.declared_total += declared
                if declared != self._bord_sum:
                    tag = "MtBordHT" if e.domain == "depense" else "MtBordHt"
                    self._add(
                        "PES-MONTANT-BORDEREAU",
                        f"{tag} ({declared:.2f}) diffère de la somme des montants HT des lignes ({self._bord_sum:.2f}) :"
                        " Hélios peut rejeter le bordereau (ERREUR_CUMUL_MONTANTS).",
                        f"Vérifier les lignes du bordereau ou recalculer {tag}.",
                        place,
                        head.mtbordht,
                        severity="warning",
                        line=line,
                    )
            nbr = _dec(head.nbrpce)
            if nbr is not None and nbr >= 1 and nbr != e.pieces:
                self._add(
                    "PES-NBRPCE",
                    f"NbrPce annonce {head.nbrpce} pièce(s) mais le bordereau en contient {e.pieces} : Hélios rejette le bordereau.",
                    f"Mettre NbrPce à {e.pieces} ou ajouter les pièces manquantes.",
                    place,
                    head.nbrpce,
                    line=line,
                )
        demat = self._demat(e.domain)
        if demat and not signed:
            # a global signature (at the end of the file) may still sign it: decided in finish()
            self._unsigned_count += 1
            if len(self._unsigned) < MAX_UNSIGNED_LISTED:
                self._unsigned.append((place, line))
        elif e.signed and not demat:
            self._add(
                "PES-INFODEMAT",
                "Le bordereau est signé mais InfoDematerialisee vaut 0 ou est absent : Hélios rejette le flux.",
                "Mettre InfoDematerialisee à 1 dans l'en-tête du domaine (avant de signer).",
                place,
                (self.domains.get(e.domain).info_dematerialisee if self.domains.get(e.domain) else None) or "(absent)",
                line=line,
            )
        self._head = None

    def _pj(self, pj: PJ) -> None:
        self.pj_count += 1
        if not pj.idunique:
            return  # reported by the schema
        if pj.idunique in self.pj_ids:
            self._add(
                "PES-PJ-DOUBLON",
                f"Deux pièces justificatives portent le même IdUnique {pj.idunique} (ERREUR_DOUBLON_PJ).",
                "Donner un IdUnique différent à chaque PJ.",
                f"PES_PJ / PJ n°{pj.index}",
                pj.idunique,
                line=pj.line,
            )
        else:
            self.pj_ids[pj.idunique] = pj.index

    def finish(self) -> None:
        if not self.global_signature:
            for place, line in self._unsigned:
                self._add(
                    "PES-INFODEMAT",
                    "InfoDematerialisee vaut 1 mais le bordereau n'est pas signé : Hélios rejette le flux.",
                    "Faire signer le bordereau (XAdES) par l'ordonnateur, ou mettre InfoDematerialisee à 0.",
                    place,
                    "1",
                    line=line,
                )
            if self._unsigned_count > len(self._unsigned):
                self._add(
                    "PES-INFODEMAT",
                    f"… et {self._unsigned_count - len(self._unsigned)} autre(s) bordereau(x) non signé(s).",
                    "Faire signer tous les bordereaux.",
                    "fichier",
                )
        for idu, place in self.pjrefs.items():
            if idu not in self.pj_ids:
                self._add(
                    "PES-PJREF",
                    f"La pièce référence la PJ électronique {idu}, absente du bloc PES_PJ du fichier.",
                    "Joindre la PJ dans PES_PJ avec cet IdUnique, ou corriger la référence (Support 02 si papier).",
                    place,
                    idu,
                )
        blocks = {"marche", "facture"} & set(self.domains)
        if self.header is not None and self.bordereaux == 0 and self.pj_count == 0 and not blocks:
            self._add(
                "PES-VIDE",
                "Le fichier ne contient ni bordereau, ni marché, ni facture, ni pièce justificative (ERREUR_FLUX_VIDE).",
                "Ajouter au moins un bordereau (PES_DepenseAller ou PES_RecetteAller), un bloc PES_Marche ou"
                " PES_Facture, ou une PJ.",
                "fichier",
            )

    def summary(self) -> dict:
        h = self.header
        return {
            "nomfic": h.nomfic if h else None,
            "typfic": h.typfic if h else None,
            "idcoll": h.idcoll if h else None,
            "idpost": h.idpost if h else None,
            "codcol": h.codcol if h else None,
            "codbud": h.codbud if h else None,
            "libellecolbud": h.libellecolbud if h else None,
            "dtestr": h.dtestr if h else None,
            "domaines": sorted(self.per_domain) or sorted(self.domains),
            "par_domaine": self.per_domain,
            "bordereaux": self.bordereaux,
            # exercice:IdBord of each bordereau, what a later PES_Retour names (flows.pipeline.collect)
            "identifiants_bordereaux": sorted({f"{exer}:{idbord}" for _, exer, _, idbord in self._bord_keys}),
            "pieces": self.pieces,
            "lignes": self.lignes,
            "tiers": self.tiers,
            "tiers_distincts": len(self.tiers_keys) if self.tiers_keys else None,
            "montant_total": f"{self.total:.2f}",
            "montant_bordereaux": f"{self.declared_total:.2f}",
            "pj": self.pj_count,
            "signed": bool(self.signed_bordereaux or self.global_signature),
            "bordereaux_signes": self.signed_bordereaux,
            "signature_globale": self.global_signature,
        }


# ----------------------------------------------------------------------------- XSD messages

_MSG_ELEMENT = re.compile(r"^Element '(?:\{[^}]*\})?([^']+)'(?:, attribute '([^']+)')?: (.*)$", re.S)
_MSG_VALUE = re.compile(r"'([^']*)' is not (?:a valid value|accepted|facet-valid)|The value '([^']*)'")


def _xsd_finding(message: str, line: int | None = None, place: str = "") -> Finding:
    raw = message.strip()
    m = _MSG_ELEMENT.match(raw)
    name, attr, rest = (m.group(1), m.group(2), m.group(3)) if m else ("", None, raw)
    value = ""
    vm = _MSG_VALUE.search(rest)
    if vm:
        value = vm.group(1) if vm.group(1) is not None else vm.group(2) or ""
    if "No matching global declaration" in rest:
        msg = f"La racine « {name} » n'est pas un PES_Aller de l'espace de noms {NS_ALLER} : le schéma ne s'applique pas."
        fix = f'Utiliser la racine <n:PES_Aller xmlns:n="{NS_ALLER}">.'
        place = place or "racine"
    elif "is not expected" in rest:
        expected = re.search(r"Expected is (?:one of )?\( ?(.*?) ?\)", rest)
        msg = f"Élément « {name} » inattendu à cet endroit" + (f" (attendu : {expected.group(1)})." if expected else ".")
        fix = "Respecter l'ordre des éléments imposé par le PES, ajouter l'élément obligatoire qui manque ou retirer l'élément inconnu."
    elif "Missing child element" in rest:
        expected = re.search(r"Expected is (?:one of )?\( ?(.*?) ?\)", rest)
        msg = f"Il manque un élément obligatoire dans « {name} »" + (f" (attendu : {expected.group(1)})." if expected else ".")
        fix = "Ajouter l'élément obligatoire manquant."
    elif "is required but missing" in rest:
        msg = f"L'attribut obligatoire de « {name} » est absent ({rest})."
        fix = "Ajouter l'attribut (les données du PES sont portées par l'attribut V)."
    elif attr or value:
        msg = f"Valeur invalide pour « {name} » : « {value} » ne respecte pas le format du PES."
        fix = "Corriger la valeur : nombres avec un point décimal (2 décimales), dates AAAA-MM-JJ, codes de la liste autorisée, texte non vide, majuscules pour BIC/IBAN."
    else:
        msg = "Non conforme au schéma PES : " + xsd_parts(raw)[2].split(" (libxml2 : ")[0] + "."
        fix = "Corriger la structure du fichier selon le schéma PES_Aller."
    return Finding(
        rule="XSD",
        message=f"{msg} (détail libxml2 : {raw})",
        fix=fix,
        place=place,
        value=value,
        layer="xsd",
        line=line,
    )


def _element_name(message: str) -> tuple[str, str | None]:
    m = _MSG_ELEMENT.match(message.strip())
    if not m:
        return "", None
    vm = _MSG_VALUE.search(m.group(3))
    value = None
    if m.group(2) == "V" and vm:
        value = vm.group(1) if vm.group(1) is not None else vm.group(2)
    return m.group(1), value


def _place_of(el: etree._Element, counters: dict[str, int]) -> str:
    """Where an element sits: "bordereau 12 / pièce 3 / ligne 1 / <Element>"."""
    parts: list[str] = []
    chain = []
    node = el
    while node is not None:
        chain.append(node)
        node = node.getparent()
    chain.reverse()
    for node in chain:
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag == "Bordereau":
            idbord = node.find("BlocBordereau/IdBord")
            parts.append(f"bordereau {_label(idbord.get('V') if idbord is not None else None, counters['Bordereau'] + 1)}")
        elif tag == "Piece":
            idpce = node.find("BlocPiece/InfoPce/IdPce")
            if idpce is None:
                idpce = node.find("BlocPiece/IdPce")
            parts.append(f"pièce {_label(idpce.get('V') if idpce is not None else None, counters['Piece'] + 1)}")
        elif tag == "LigneDePiece":
            il = node.find("BlocLignePiece/*/IdLigne")
            parts.append(f"ligne {_label(il.get('V') if il is not None else None, counters['LigneDePiece'] + 1)}")
        elif tag in ("EnTetePES", "Enveloppe", "PES_PJ", "Tiers"):
            parts.append({"EnTetePES": "en-tête", "Enveloppe": "enveloppe", "PES_PJ": "PES_PJ", "Tiers": "tiers"}[tag])
    local = _localname(el)
    if local and (not parts or local not in ("Bordereau", "Piece", "LigneDePiece")):
        parts.append(local)
    return " / ".join(parts)


class _SmallReads:
    """File wrapper that hands the parser small chunks, so that an XSD error can be tied to the
    few elements parsed with it (libxml2 reports validation errors without line numbers when it
    validates while streaming)."""

    def __init__(self, fh, size: int = 512) -> None:
        self.fh = fh
        self.size = size

    def read(self, n: int = -1) -> bytes:
        return self.fh.read(self.size if n is None or n < 0 else min(n, self.size))


def _locate_xsd_errors(path: Path, messages: list[str], *, time_budget: float = 60.0) -> list[Finding]:
    """Second, slower pass (only for invalid files): find the line and place of each XSD error."""
    import time

    deadline = time.monotonic() + time_budget
    schema = project_schema()
    pending: list[tuple[str, str, str | None, str]] = []  # (message, element, value, event to match)
    located: list[Finding] = []
    seen = 0
    counters = {"Bordereau": 0, "Piece": 0, "LigneDePiece": 0}
    wanted = min(len(messages), MAX_LOCATED_XSD_ERRORS)
    with path.open("rb") as fh:
        it = xmlsafe.hardened_iterparse(_SmallReads(fh), schema=schema, events=("start", "end"))
        try:
            for n_events, (ev, el) in enumerate(it):
                n = len(it.error_log)
                if n > seen:
                    for err in list(it.error_log)[seen:n]:
                        if err.domain_name not in ("SCHEMASV", "SCHEMASP"):
                            continue
                        name, value = _element_name(err.message)
                        if "No matching global declaration" in err.message:
                            located.append(_xsd_finding(err.message, 1, "racine"))
                        else:
                            want = "end" if "Missing child" in err.message else "start"
                            pending.append((err.message, name, value, want))
                    seen = n
                if pending and isinstance(el.tag, str):
                    local = _localname(el)
                    still = []
                    for msg, name, value, want in pending:
                        if want == ev and name == local and (value is None or el.get("V") == value):
                            located.append(_xsd_finding(msg, el.sourceline, _place_of(el, counters)))
                        else:
                            still.append((msg, name, value, want))
                    pending = still
                if len(located) >= wanted or (n_events % 4096 == 0 and time.monotonic() > deadline):
                    break
                if ev == "end" and el.tag in ("LigneDePiece", "Piece", "Bordereau"):
                    counters[el.tag] += 1
                    if el.tag == "Piece":
                        counters["LigneDePiece"] = 0
                    elif el.tag == "Bordereau":
                        counters["Piece"] = 0
                    el.clear(keep_tail=False)
                    if el.tag == "Bordereau":
                        parent = el.getparent()
                        while parent is not None and el.getprevious() is not None:
                            del parent[0]
        except etree.XMLSyntaxError:
            pass
    located += [_xsd_finding(msg) for msg, _n, _v, _w in pending]
    if len(located) < wanted:  # not reached before the time budget: report them without a place
        known = {f.message for f in located}
        for msg in messages[:wanted]:
            f = _xsd_finding(msg)
            if f.message not in known and len(located) < wanted:
                located.append(f)
    return located


def _localname(el) -> str:
    """Local name of an element without etree.QName, which raises ValueError on the malformed
    names ("n:", ":a") that libxml2's streaming parser yields before reporting the syntax error."""
    tag = el.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _root_localname(path: Path) -> str | None:
    """Local name of the root element (first start event), None if the start is unreadable."""
    try:
        for _ev, el in xmlsafe.hardened_iterparse(path, events=("start",)):
            name = _localname(el)
            return name if name and ":" not in name else None
    except etree.XMLSyntaxError:
        return None
    return None


def _wellformedness_error(path: Path) -> Finding | None:
    """Re-read the file without schema to name its first syntax error (line, column); None if none."""
    it = xmlsafe.hardened_iterparse(path, tag=CONTAINER_TAGS)
    text, line, column = "document incomplet ou illisible", None, None
    try:
        for _ev, el in it:
            if el.tag in ("Piece", "Bordereau", "PJ"):
                el.clear(keep_tail=False)
        return None
    except etree.XMLSyntaxError as exc:
        errs = [e for e in it.error_log if e.domain_name not in ("SCHEMASV", "SCHEMASP") and e.level_name != "WARNING"]
        if errs:
            text, line, column = errs[0].message.strip(), errs[0].line, errs[0].column
        else:
            text = exc.msg or str(exc)
            line, column = exc.position if exc.position else (exc.lineno, 0)
    hint = ""
    text = syntax_fr(text)
    if "huge" in text.lower():
        hint = " (nœud texte de plus de 10 Mo, sans doute une PJ trop volumineuse)"
    where = f"ligne {line}, colonne {column}" if line else ""
    return Finding(
        "XML-MALFORME",
        f"Le fichier n'est pas un XML bien formé{hint} : {text}" + (f" ({where})." if where else "."),
        "Corriger la syntaxe XML (balise non fermée, caractère interdit, entité inconnue, fichier tronqué) ou régénérer le fichier.",
        place=where,
        layer="lecture",
        line=line,
    )


# ----------------------------------------------------------------------------- entry point


def validate_pes(path: str | Path, *, known_nomfics: set[str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Report:
    """Validate a PES_Aller file; every finding of the three layers ends up in the Report.

    ``known_nomfics``: the NomFic already sent for this collectivité (NomFic must be unique per
    collectivité). ``max_bytes``: files above it are not read at all (PES-TAILLE); above 128 MiB
    a warning says Hélios will probably refuse the upload.
    """
    return _validate(Path(path), known_nomfics, max_bytes, None)[0]


def validate_pes_with_tiers(
    path: str | Path, *, known_nomfics: set[str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Report, list[list] | None]:
    """validate_pes, plus the tiers rows the tiers gate checks, collected by the same streaming
    pass (flows.quality.extract's COLUMNS order): the file is read once, not twice. Pass them to
    ``flows.quality.gate.run_tiers_gate(path, rows=...)``. The rows are None when the pass could
    not read the whole file as a PES_Aller (refused, malformed, other root): the gate then reads
    the file itself and says why it cannot."""
    rows: list[list] = []
    report, whole = _validate(Path(path), known_nomfics, max_bytes, rows)
    return report, rows if whole else None


def _validate(path: Path, known_nomfics: set[str] | None, max_bytes: int, tiers_rows: list | None) -> tuple[Report, bool]:
    if not path.is_file():
        raise UnreadableFile(f"Fichier introuvable : {path}")
    size = path.stat().st_size
    if size == 0:
        raise UnreadableFile(f"Le fichier est vide : {path}")
    report = Report(file=str(path), kind="pes_aller")
    report.summary["taille_octets"] = size
    if size > max_bytes:
        report.add(
            Finding(
                "PES-TAILLE",
                f"Le fichier pèse {size} octets, au-delà du maximum accepté ({max_bytes} octets) : il n'a pas été lu.",
                "Découper le flux en plusieurs fichiers PES.",
                value=str(size),
                layer="lecture",
            )
        )
        return report, False
    if size > HELIOS_UPLOAD_CAP:
        report.add(
            Finding(
                "PES-TAILLE-HELIOS",
                f"Le fichier pèse {size / 1048576:.0f} Mo : au-delà de 128 Mo, le dépôt vers Hélios est habituellement refusé.",
                "Découper le flux en plusieurs fichiers PES de moins de 128 Mo.",
                value=str(size),
                severity="warning",
                layer="lecture",
            )
        )
    with path.open("rb") as fh:
        head = fh.read(65536)
    try:
        xmlsafe.check_prolog(head)
    except xmlsafe.UnsafeXML as exc:
        report.add(
            Finding(
                "XML-DANGEREUX",
                str(exc),
                "Retirer la déclaration DOCTYPE : un PES n'en contient jamais.",
                value="<!DOCTYPE",
                layer="lecture",
                line=head[: head.upper().find(b"<!DOCTYPE")].count(b"\n") + 1,
            )
        )
        return report, False

    declared, enc_findings = check_encoding(path)
    report.extend(enc_findings)
    report.summary["encodage"] = declared or "utf-8 (implicite)"

    collector = PesCollector(known_nomfics)
    reader = PesStreamReader(read_tiers=False, tiers_rows=tiers_rows)
    # lxml's iterparse with schema=... may stop silently on a well-formedness error (truncated
    # file): we also listen to the root's "end" event, and a file whose root never ends is
    # re-read without schema to name the syntax error.
    root_name = _root_localname(path)
    tags = CONTAINER_TAGS + ((f"{{*}}{root_name}",) if root_name and root_name not in CONTAINER_TAGS else ())
    it = xmlsafe.hardened_iterparse(path, tag=tags, schema=project_schema())
    complete = False
    first = True
    try:
        for _ev, el in it:
            if first:
                first = False
                if el.getroottree().docinfo.internalDTD is not None:
                    raise xmlsafe.UnsafeXML("Le fichier contient une DTD interne : refusée pour des raisons de sécurité.")
            if el.getparent() is None:
                complete = True
                continue
            for item in reader.handle(el):
                collector.feed(item)
    except etree.XMLSyntaxError:
        complete = False
    except xmlsafe.UnsafeXML as exc:
        report.add(Finding("XML-DANGEREUX", str(exc), "Retirer la DTD du fichier.", layer="lecture"))
        return report, False
    log = list(it.error_log)  # (the exception's own error_log may carry errors of earlier parses)
    schema_messages = [e.message for e in log if e.domain_name in ("SCHEMASV", "SCHEMASP")]
    malformed = None if complete else _wellformedness_error(path)

    if malformed is not None:
        report.add(malformed)
    if schema_messages:
        if malformed is None:
            report.extend(_locate_xsd_errors(path, schema_messages))
        else:
            report.extend(_xsd_finding(m) for m in schema_messages[:MAX_LOCATED_XSD_ERRORS])
        if len(schema_messages) > MAX_LOCATED_XSD_ERRORS:
            report.add(
                Finding(
                    "XSD",
                    f"{len(schema_messages) - MAX_LOCATED_XSD_ERRORS} autre(s) écart(s) au schéma non détaillé(s).",
                    "Corriger les erreurs ci-dessus puis revalider.",
                    layer="xsd",
                )
            )
    if collector.header is not None:
        collector.finish()
    report.extend(collector.findings)
    report.summary.update(collector.summary())
    report.summary["schema"] = "conforme" if not schema_messages and malformed is None else "non conforme"
    if malformed is None and (collector.signed_bordereaux or collector.global_signature):
        report.extend(check_signatures(path))
    return report, malformed is None and root_name == "PES_Aller"


# Signature rules that validate_pes leaves to its own checks (PES-INFODEMAT names unsigned bordereaux).
_SIG_RULES_SKIPPED = {"SIG-ABSENTE", "SIG-DOC-VIDE", "SIG-DOC-LECTURE"}
SIGNED_MAX_BYTES = 64 * 1024 * 1024  # a signed file is parsed whole (about 10x in memory)


def check_signatures(path: Path) -> list[Finding]:
    """Integrity of every signature already present (a file signed by the collectivité's own
    software goes to the DGFiP as it is): a bordereau changed after signing is refused here,
    named, instead of by Hélios days later. Certificate trust is `demat verify`'s business;
    a certificate outside its validity at signing time is refused (Hélios refuses it too)."""
    size = path.stat().st_size
    if size > SIGNED_MAX_BYTES:
        return [
            Finding(
                "PES-SIGNATURE-NON-VERIFIEE",
                f"{path.name} : fichier signé de {size // 1048576} Mo, au-delà de ce que la validation vérifie"
                " en mémoire : l'intégrité des signatures n'a pas été contrôlée.",
                "Vérifier les signatures avec « demat verify » avant l'envoi.",
                severity="warning",
                layer="signature",
            )
        ]
    from flows.signature.verify import verify_pes

    verified = verify_pes(path.read_bytes())
    out: list[Finding] = []
    for f in verified.all_findings:
        if f.severity != "error" or f.rule in _SIG_RULES_SKIPPED:
            continue
        out.append(
            Finding(
                f.rule,
                f"{path.name} : {f.message}",
                f.fix or "Reprendre le fichier signé d'origine, ou faire signer à nouveau le bordereau.",
                f.place,
                f.value,
                severity="error",
                layer="signature",
            )
        )
    return out


def signing_problems(pes: bytes, *, name: str = "PES") -> list[Finding]:
    """Why signing this PES would make it invalid, checked BEFORE signing (empty list: sign).

    Signing a bordereau sets InfoDematerialisee to 1 (Hélios refuses a signed bordereau without
    it), and InfoDematerialisee=1 makes MtCumulAnnuel mandatory and > 0: a file valid unsigned
    but without MtCumulAnnuel would come out of the signature refused. demat refuses to sign it
    and says why, rather than produce a signed file that validation then refuses."""
    try:
        root = xmlsafe.parse_bytes(pes)
    except (etree.XMLSyntaxError, xmlsafe.UnsafeXML) as exc:
        return [Finding("PES-SIGNATURE-IMPOSSIBLE", f"{name} : fichier illisible, signature impossible : {exc if isinstance(exc, xmlsafe.UnsafeXML) else error_fr(exc)}.",
                        "Valider le fichier (demat validate) et le corriger avant de le signer.", layer="lecture")]
    out: list[Finding] = []
    for dom in ("PES_DepenseAller", "PES_RecetteAller"):
        for index, b in enumerate(root.iterfind(f"{dom}/Bordereau"), start=1):
            bloc = b.find("BlocBordereau")
            idbord = pes_v_safe(bloc, "IdBord")
            cumul = _dec(pes_v_safe(bloc, "MtCumulAnnuel"))
            if cumul is None or cumul <= 0:
                out.append(
                    Finding(
                        "PES-SIGNATURE-MTCUMUL",
                        f"{name} : le bordereau {_label(idbord, index)} n'a pas de MtCumulAnnuel (> 0). La signature"
                        " met InfoDematerialisee à 1, et Hélios exige alors MtCumulAnnuel : le fichier signé serait"
                        " refusé. Signature refusée avant de signer.",
                        "Renseigner MtCumulAnnuel (cumul annuel des bordereaux, > 0) dans BlocBordereau, revalider,"
                        " puis signer.",
                        f"bordereau {_label(idbord, index)}",
                        pes_v_safe(bloc, "MtCumulAnnuel") or "(absent)",
                        layer="metier",
                        line=b.sourceline,
                    )
                )
    return out


def pes_v_safe(parent, path: str) -> str | None:
    if parent is None:
        return None
    el = parent.find(path)
    return None if el is None else el.get("V")
