"""What Hélios checks in a PES_Aller, written for the DGFiP simulator (never demat's validators).

The DGFiP judges on its own: the official PES_Aller schema (simulators.reference), each
bordereau's XAdES signature with its own verifier (simulators.xmlsig) against its own trust
store, its own referential of collectivités and budgets (from the platform configuration it is
given, as Hélios knows which budgets are open), what it already integrated (NomFic per
collectivité, bordereaux per collectivité/budget/exercice/type: state kept by the counterpart's
ledger), and the tiers rules of FACTS.md (keys of SIRET/SIREN/FINESS/NIR, address, bank).

Findings are placed as the acquit places them: the whole flux (DomaineAck 0), a bordereau's
signature (3), a PJ (4), a bordereau of dépense (5) or recette (6), with the pièce and the ligne.
NumAnoAck are the codes of the official acquit schema (CommunAck.xsd); the "NNNN - text"
libellés are numbered 8xxx by this simulator (not the DGFiP's own numbers, which are not public).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from lxml import etree

from flows import xmlsafe
from simulators import reference, xmlsig

NS_ALLER = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"
DOMAINS = {"PES_DepenseAller": "5", "PES_RecetteAller": "6"}
BIC_RE = re.compile(r"^[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?$")
IBAN_RE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
LA_POSTE = "356000000"


@dataclass
class Err:
    code: str  # NumAnoAck
    number: str  # the NNNN of the libellé
    text: str  # French

    @property
    def libelle(self) -> str:
        return f"{self.number} - {self.text}"[:500]


@dataclass
class PieceResult:
    numpiece: str
    errors: list[Err] = field(default_factory=list)
    lignes: dict[str, list[Err]] = field(default_factory=dict)


@dataclass
class BordResult:
    domaine: str  # "5" dépense, "6" recette
    numbord: str
    exercice: str
    typbord: str
    errors: list[Err] = field(default_factory=list)
    signature: list[Err] = field(default_factory=list)  # DomaineAck 3
    signed: bool = False
    pieces: dict[str, PieceResult] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not (self.errors or self.signature or any(p.errors or any(p.lignes.values()) for p in self.pieces.values()))

    def piece(self, num: str) -> PieceResult:
        return self.pieces.setdefault(num, PieceResult(num))

    def key(self, idcoll: str, codcol: str, codbud: str) -> str:
        return f"bordereau:{idcoll}:{codcol}:{codbud}:{self.exercice}:{self.domaine}:{self.typbord}:{self.numbord}"


@dataclass
class Judgement:
    """What Hélios concluded about one file; `accepted` only when nothing at all was found."""

    header: dict[str, str] = field(default_factory=dict)  # NomFic, TypFic, IdPost, IdColl, CodCol, CodBud...
    flux: list[Err] = field(default_factory=list)  # DomaineAck 0: the whole file is refused
    bordereaux: list[BordResult] = field(default_factory=list)
    pjs: list[tuple[str, list[Err]]] = field(default_factory=list)  # (IdUnique, errors)
    schema: str = ""

    @property
    def accepted(self) -> bool:
        return not self.flux and all(b.accepted for b in self.bordereaux) and not any(e for _, e in self.pjs)

    def all_errors(self) -> list[Err]:
        out = list(self.flux)
        for b in self.bordereaux:
            out += b.signature + b.errors
            for p in b.pieces.values():
                out += p.errors
                for errs in p.lignes.values():
                    out += errs
        for _, errs in self.pjs:
            out += errs
        return out


# -- keys written for the DGFiP (FACTS.md §2) -------------------------------------------------------


def luhn(digits: str) -> bool:
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def siret_ok(v: str) -> bool:
    if len(v) != 14 or not v.isdigit():
        return False
    if v.startswith(LA_POSTE) and v != LA_POSTE + "00000":
        return sum(int(c) for c in v) % 5 == 0 or luhn(v)
    return luhn(v)


def nir_ok(v: str) -> bool:
    if len(v) != 15:
        return False
    body = v[:13].upper().replace("2A", "19").replace("2B", "18")
    if not body.isdigit() or not v[13:].isdigit():
        return False
    return 97 - int(body) % 97 == int(v[13:])


def iban_ok(v: str) -> bool:
    if not IBAN_RE.match(v):
        return False
    moved = v[4:] + v[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def rib_ok(bank: str, branch: str, account: str, key: str) -> bool:
    table = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "12345678912345678923456789")
    account = account.upper().translate(table)
    if not (bank.isdigit() and branch.isdigit() and account.isdigit() and key.isdigit()):
        return False
    return (89 * int(bank) + 15 * int(branch) + 3 * int(account) + int(key)) % 97 == 0


# -- reading ----------------------------------------------------------------------------------------


def v(el: etree._Element | None, path: str) -> str:
    if el is None:
        return ""
    found = el.find(path)
    return (found.get("V") or "").strip() if found is not None else ""


def _num(text: str, fallback: int) -> str:
    return text if text.isdigit() and len(text) <= 13 else str(fallback)


def _dec(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return None


def tiers_errors(t: etree._Element) -> list[Err]:
    """The tiers rules that make Hélios reject a line (FACTS.md §2)."""
    out: list[Err] = []
    info = t.find("InfoTiers")
    idt, nat = v(info, "IdTiers"), v(info, "NatIdTiers")
    keyed = {"01": ("SIRET", siret_ok), "02": ("SIREN", lambda s: len(s) == 9 and luhn(s)),
             "03": ("FINESS", lambda s: len(s) == 9 and luhn(s)), "04": ("NIR", nir_ok)}
    if idt and nat in keyed and not keyed[nat][1](idt):
        out.append(Err("ERREUR_AUTRE", "8101", f"Identifiant du tiers {keyed[nat][0]} « {idt} » invalide (clé de contrôle)"))
    cat = v(info, "CatTiers")
    if not cat:
        out.append(Err("ERREUR_AUTRE", "8102", "Catégorie du tiers (CatTiers) absente"))
    if not v(info, "NatJur"):
        out.append(Err("ERREUR_AUTRE", "8103", "Nature juridique du tiers (NatJur) absente"))
    person = cat == "01"
    for tag in ("Civilite", "Prenom"):
        present = bool(v(info, tag))
        if person and not present:
            out.append(Err("ERREUR_AUTRE", "8104", f"{tag} obligatoire pour une personne physique (CatTiers 01)"))
        if present and not person and cat:
            out.append(Err("ERREUR_AUTRE", "8105", f"{tag} présent à tort pour un tiers qui n'est pas une personne physique"))
    if len(v(info, "Nom")) > 38:
        out.append(Err("ERREUR_AUTRE", "8106", "Nom du tiers de plus de 38 caractères"))
    adr = t.find("Adresse")
    if adr is not None:
        if not v(adr, "Adr2"):
            out.append(Err("ERREUR_AUTRE", "8111", "Adresse du tiers sans ligne Adr2"))
        cp = v(adr, "CP")
        if not (len(cp) == 5 and cp.isdigit()):
            out.append(Err("ERREUR_AUTRE", "8112", f"Code postal du tiers « {cp} » : 5 chiffres attendus (99999 à l'étranger)"))
        if len(v(adr, "Ville")) > 38:
            out.append(Err("ERREUR_AUTRE", "8113", "Ville du tiers de plus de 38 caractères"))
        if v(adr, "CodRes") == "1" and not v(adr, "CodPays"):
            out.append(Err("ERREUR_AUTRE", "8114", "Code pays absent pour un tiers résidant à l'étranger (CodRes 1)"))
    bank = t.find("CpteBancaire")
    if bank is not None:
        iban, bic = v(bank, "IBAN"), v(bank, "BIC")
        if iban and iban != iban.upper():
            out.append(Err("ERREUR_AUTRE", "8121", f"IBAN « {iban} » en minuscules"))
        elif iban and not iban_ok(iban):
            out.append(Err("ERREUR_AUTRE", "8122", f"IBAN « {iban} » invalide (clé ISO 13616)"))
        if bic and not BIC_RE.match(bic):
            out.append(Err("ERREUR_AUTRE", "8123", f"BIC « {bic} » invalide (8 ou 11 caractères en majuscules)"))
        if iban and not iban.startswith("FR") and not bic:
            out.append(Err("ERREUR_AUTRE", "8124", "BIC obligatoire pour un compte à l'étranger"))
        rib = [v(bank, k) for k in ("CodeEtab", "CodeGuic", "IdCpte", "CleRib")]
        if any(rib) and not rib_ok(*rib):
            out.append(Err("ERREUR_AUTRE", "8125", "RIB invalide (clé RIB)"))
        if (iban or any(rib)) and not v(bank, "TitCpte"):
            out.append(Err("ERREUR_AUTRE", "8126", "Titulaire du compte (TitCpte) absent"))
    return out


def _signature_errors(sig: etree._Element, bid: str, trust: xmlsig.TrustStore) -> list[Err]:
    verdict = xmlsig.verify_signature(sig, trust)
    out = []
    if f"#{bid}" not in verdict.references:
        out.append(Err("ERREUR_SIGNATURE_BORDEREAU_INVALIDE", "8301",
                       f"La signature ne porte pas sur le bordereau (Id « {bid} »)"))
    for p in verdict.problems:
        if p.code == xmlsig.CERTIFICATE:
            out.append(Err("ERREUR_CERTIFICAT", "8310", f"Certificat du signataire refusé : {p.message}"))
        elif "incomplet" in p.message or "absent" in p.message or "aucun certificat" in p.message:
            out.append(Err("ERREUR_SIGNATURE_BORDEREAU_INCOMPLETE", "8302", f"Signature du bordereau incomplète : {p.message}"))
        elif "illisible" in p.message or "invérifiable" in p.message or "non prise en charge" in p.message:
            out.append(Err("ERREUR_SIGNATURE_BORDEREAU_ILLISIBLE", "8303", f"Signature du bordereau illisible : {p.message}"))
        else:
            out.append(Err("ERREUR_SIGNATURE_BORDEREAU_INVALIDE", "8304", f"Signature du bordereau invalide : {p.message}"))
    return out


# -- the judgement ----------------------------------------------------------------------------------


def judge(data: bytes, *, trust: xmlsig.TrustStore, registry: dict[str, dict] | None = None,
          known: Callable[[str], bool] = lambda key: False, remember_bordereaux: bool = True) -> Judgement:
    """Everything Hélios finds in one PES_Aller. `registry`: SIRET -> {idpost, budgets: {(codcol, codbud)}};
    None = any collectivité. `known(key)`: facts of earlier files (NomFic, bordereaux integrated);
    `remember_bordereaux` False: a bordereau number integrated by an earlier file is not refused."""
    j = Judgement()
    try:
        root = xmlsafe.parse_bytes(data)
    except (etree.XMLSyntaxError, ValueError) as exc:
        code = "ERREUR_ENCODING" if "encod" in str(exc).lower() else "ERREUR_SCHEMA_INCOMPLET"
        j.flux.append(Err(code, "8001", f"Fichier illisible : {exc}"))
        return j
    params, head = root.find("Enveloppe/Parametres"), root.find("EnTetePES")
    j.header = {"NomFic": v(params, "NomFic"), "TypFic": v(params, "TypFic")}
    j.header.update({t: v(head, t) for t in ("DteStr", "IdPost", "IdColl", "CodCol", "CodBud", "LibelleColBud")})
    if etree.QName(root).localname != "PES_Aller" or etree.QName(root).namespace != NS_ALLER:
        j.flux.append(Err("ERREUR_SCHEMA_INCOMPLET", "8002", f"Le fichier n'est pas un PES_Aller (racine {root.tag})"))
        return j
    try:
        problems = reference.errors("pes", root, limit=5)
        j.schema = reference.locate("pes").label()
    except (reference.SchemaMissing, etree.XMLSchemaParseError, OSError) as exc:
        problems = [f"schéma PES indisponible chez le destinataire : {exc}"]
    for p in problems:
        j.flux.append(Err("ERREUR_SCHEMA_INCOMPLET", "8003", f"Non conforme au schéma PES_Aller : {p}"))
    h = j.header
    if h["IdColl"] and not siret_ok(h["IdColl"]):
        j.flux.append(Err("ERREUR_SIRET", "8011", f"SIRET de la collectivité « {h['IdColl']} » invalide (clé de contrôle)"))
    if registry is not None and h["IdColl"]:
        known_coll = registry.get(h["IdColl"])
        if known_coll is None:
            j.flux.append(Err("ERREUR_CODE_COLLECTIVITE_BUDGET", "8012",
                              f"Collectivité SIRET {h['IdColl']} inconnue d'Hélios"))
        else:
            if (h["CodCol"], h["CodBud"]) not in known_coll["budgets"]:
                j.flux.append(Err("ERREUR_CODE_COLLECTIVITE_BUDGET", "8013",
                                  f"Budget CodCol {h['CodCol']} / CodBud {h['CodBud']} non ouvert dans Hélios pour la "
                                  f"collectivité {h['IdColl']}"))
            if known_coll.get("idpost") and h["IdPost"] != known_coll["idpost"]:
                j.flux.append(Err("ERREUR_CODIQUE", "8014",
                                  f"Poste comptable {h['IdPost']} : la collectivité relève du poste {known_coll['idpost']}"))
    if h["NomFic"] and known(f"nomfic:{h['IdColl']}:{h['NomFic']}"):
        j.flux.append(Err("ERREUR_PES_PARAM", "8021", f"NomFic « {h['NomFic']} » déjà reçu pour cette collectivité"))
    blocks = [b for b in root if isinstance(b.tag, str) and b.tag in DOMAINS]
    if not any(b.find("Bordereau") is not None for b in blocks):
        j.flux.append(Err("ERREUR_FLUX_VIDE", "8022", "Aucun bordereau de dépense ou de recette dans le fichier"))
    if root.find(f"{{{xmlsig.DS}}}Signature") is not None:
        j.flux.append(Err("ERREUR_PES_SIGNATURE", "8023", "Signature globale du flux non acceptée : signez chaque bordereau"))
    seen_bord: set[tuple[str, str, str, str]] = set()
    for block in blocks:
        domaine = DOMAINS[block.tag]
        head_dom = block.find("EnTeteDepense") if domaine == "5" else block.find("EnTeteRecette")
        demat = v(head_dom, "InfoDematerialisee") == "1"
        for pos, bord in enumerate(block.iterfind("Bordereau"), 1):
            _judge_bordereau(j, bord, pos, domaine, demat, trust,
                             known if remember_bordereaux else (lambda key: False), seen_bord)
    seen_pj: set[str] = set()
    for pj in root.iterfind("PES_PJ/PJ"):
        uid = v(pj, "IdUnique")
        errs = []
        if uid in seen_pj:
            errs.append(Err("ERREUR_DOUBLON_PJ", "8401", f"Pièce justificative IdUnique « {uid} » en double"))
        seen_pj.add(uid)
        j.pjs.append((uid, errs))
    return j


def _judge_bordereau(j: Judgement, bord: etree._Element, pos: int, domaine: str, demat: bool,
                     trust: xmlsig.TrustStore, known: Callable[[str], bool], seen: set) -> None:
    bloc = bord.find("BlocBordereau")
    h = j.header
    b = BordResult(domaine, _num(v(bloc, "IdBord"), pos), v(bloc, "Exer") or "0", v(bloc, "TypBord"))
    j.bordereaux.append(b)
    sigs = bord.findall(f"{{{xmlsig.DS}}}Signature")
    b.signed = bool(sigs)
    for sig in sigs:
        b.signature += _signature_errors(sig, bord.get("Id") or "", trust)
    if demat and not sigs:
        b.signature.append(Err("ERREUR_PES_SIGNATURE", "8305",
                               "Bordereau dématérialisé (InfoDematerialisee 1) sans signature électronique"))
    ident = (domaine, b.exercice, b.typbord, b.numbord)
    if ident in seen:
        b.errors.append(Err("ERREUR_DOUBLON_BORDEREAU", "8501", f"Bordereau {b.numbord} ({b.exercice}) en double dans le fichier"))
    elif known(b.key(h["IdColl"], h["CodCol"], h["CodBud"])):
        b.errors.append(Err("ERREUR_DOUBLON_BORDEREAU", "8502",
                            f"Bordereau {b.numbord} de l'exercice {b.exercice} déjà intégré par Hélios (reçu dans un "
                            "fichier précédent)"))
    seen.add(ident)
    pieces = bord.findall("Piece")
    nbr = v(bloc, "NbrPce")
    if nbr and nbr.isdigit() and int(nbr) != len(pieces):
        b.errors.append(Err("ERREUR_AUTRE", "8503", f"NbrPce vaut {nbr} mais le bordereau contient {len(pieces)} pièce(s)"))
    if demat and not v(bloc, "MtCumulAnnuel"):
        b.errors.append(Err("ERREUR_AUTRE", "8504", "MtCumulAnnuel obligatoire pour un bordereau dématérialisé"))
    total = Decimal(0)
    seen_pce: set[str] = set()
    for ppos, piece in enumerate(pieces, 1):
        info = piece.find("BlocPiece/InfoPce")
        num = _num(v(info, "IdPce"), ppos)
        if num in seen_pce:
            b.piece(num).errors.append(Err("ERREUR_DOUBLON_PIECE", "8601", f"Pièce {num} en double dans le bordereau"))
        seen_pce.add(num)
        seen_lig: set[str] = set()
        for lpos, ligne in enumerate(piece.iterfind("LigneDePiece"), 1):
            il = ligne.find("BlocLignePiece/InfoLignePce")
            il = il if il is not None else ligne.find("BlocLignePiece/InfoLignePiece")
            lnum = _num(v(il, "IdLigne"), lpos)
            errs: list[Err] = []
            if lnum in seen_lig:
                errs.append(Err("ERREUR_DOUBLON_LIGNE", "8701", f"Ligne {lnum} en double dans la pièce {num}"))
            seen_lig.add(lnum)
            amount = _dec(v(il, "MtHT"))
            total += amount or 0
            tiers = ligne.find("Tiers")
            if tiers is not None:
                errs += tiers_errors(tiers)
            if errs:
                b.piece(num).lignes.setdefault(lnum, []).extend(errs)
    declared = _dec(v(bloc, "MtBordHT"))
    if declared is not None and declared != total:
        b.errors.append(Err("ERREUR_CUMUL_MONTANTS", "8505",
                            f"MtBordHT {declared} différent de la somme des lignes {total}"))
