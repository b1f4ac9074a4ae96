"""A small PES_Aller builder for the tiers-gate tests: bordereaux / pièces / lignes with the tiers
you give, element order as in the XSD v5.30, ISO-8859-1. Not a full generator (no amounts check):
flows.helios.generate.generate_pes is the project's one."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"

INFO_ORDER_DEP = ["IdTiers", "NatIdTiers", "DteIdTiers", "RefTiers", "CatTiers", "NatJur", "Civilite", "Nom", "ComplNom", "Prenom"]
INFO_ORDER_REC = ["IdTiers", "NatIdTiers", "DteIdTiers", "RefTiers", "CatTiers", "NatJur", "TypTiers", "Civilite", "Nom", "ComplNom", "Prenom"]
ADR_ORDER = ["TypAdr", "Adr1", "Adr2", "Adr3", "CP", "Ville", "CodRes", "CodPays"]
BANK_ORDER = ["IdPayInt", "IdBancInt", "CodeEtab", "CodeGuic", "IdCpte", "CleRib", "BIC", "IBAN", "LibBanc", "TitCpte"]

ADR_KEYS = set(ADR_ORDER)
BANK_KEYS = set(BANK_ORDER)


def company(**over) -> dict:
    """A valid company tiers (SIRET from FACTS, SEPA IBAN + BIC)."""
    t = {
        "IdTiers": "73282932000074",
        "NatIdTiers": "01",
        "RefTiers": "F001",
        "CatTiers": "50",
        "NatJur": "03",
        "Nom": "SCIERIE DES LANDES",
        "TypAdr": "1",
        "Adr2": "12 ROUTE DE BORDEAUX",
        "CP": "40000",
        "Ville": "MONT-DE-MARSAN",
        "CodRes": "0",
        "BIC": "SOGEFRPPXXX",
        "IBAN": "FR7630003017020002010412521",
        "TitCpte": "SCIERIE DES LANDES",
    }
    t.update(over)
    return {k: v for k, v in t.items() if v is not None}


def person(**over) -> dict:
    """A valid natural person (CatTiers 01) paid on a French RIB."""
    t = {
        "RefTiers": "P001",
        "CatTiers": "01",
        "NatJur": "01",
        "Civilite": "Mme",
        "Nom": "LABORDE",
        "Prenom": "JEANNE",
        "TypAdr": "1",
        "Adr2": "3 RUE DES PINS",
        "CP": "40100",
        "Ville": "DAX",
        "CodRes": "0",
        "CodeEtab": "30001",
        "CodeGuic": "00866",
        "IdCpte": "C7850000000",
        "CleRib": "67",
        "TitCpte": "JEANNE LABORDE",
    }
    t.update(over)
    return {k: v for k, v in t.items() if v is not None}


def _el(name: str, value: str) -> str:
    return f"<{name} V={quoteattr(str(value))}/>"


def tiers_xml(t: dict, *, recette: bool = False, adresse: bool = True, banque: bool | None = None) -> str:
    order = INFO_ORDER_REC if recette else INFO_ORDER_DEP
    info = "".join(_el(k, t[k]) for k in order if k in t)
    out = f"<Tiers><InfoTiers>{info}</InfoTiers>"
    if adresse and any(k in t for k in ADR_KEYS):
        out += "<Adresse>" + "".join(_el(k, t[k]) for k in ADR_ORDER if k in t) + "</Adresse>"
    has_bank = any(k in t for k in BANK_KEYS) if banque is None else banque
    if has_bank:
        out += "<CpteBancaire>" + "".join(_el(k, t[k]) for k in BANK_ORDER if k in t) + "</CpteBancaire>"
    return out + "</Tiers>"


def build_pes(
    bordereaux: list[list[list[list[dict]]]],
    *,
    kind: str = "depense",
    nomfic: str = "PESALR2_TEST",
    exer: str = "2026",
    first_idbord: int = 1,
    pj_bytes: int = 0,
) -> bytes:
    """bordereaux[b][p][l] is the list of tiers of ligne l of pièce p of bordereau b (dépense: at
    most one tiers per ligne; recette: any number)."""
    recette = kind == "recette"
    flux = "PES_RecetteAller" if recette else "PES_DepenseAller"
    head = "EnTeteRecette" if recette else "EnTeteDepense"
    info_ligne = "InfoLignePiece" if recette else "InfoLignePce"
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        f'<n:PES_Aller xmlns:n="{NS}">',
        f'<Enveloppe><Parametres><Version V="1"/><TypFic V="PESALR2"/><NomFic V="{nomfic}"/></Parametres></Enveloppe>',
        '<EnTetePES><DteStr V="2026-11-25"/><IdPost V="040000"/><IdColl V="21400192000016"/>'
        '<CodCol V="001"/><CodBud V="01"/><LibelleColBud V="COMMUNE DE TEST"/></EnTetePES>',
        f'<{flux}><{head}><IdVer V="2"/><InfoDematerialisee V="0"/></{head}>',
    ]
    for b, pieces in enumerate(bordereaux):
        idbord = first_idbord + b
        parts.append(
            f'<Bordereau Id="B{idbord}"><BlocBordereau><Exer V="{exer}"/><IdBord V="{idbord}"/>'
            f'<DteBordEm V="2026-11-25"/><TypBord V="01"/><NbrPce V="{len(pieces)}"/>'
            '<MtBordHT V="100.00"/></BlocBordereau>'
        )
        for p, lignes in enumerate(pieces, start=1):
            parts.append(
                f'<Piece><BlocPiece><InfoPce><IdPce V="{p}"/><TypPce V="01"/><NatPce V="01"/>'
                f'<Obj V="PIECE {p}"/></InfoPce></BlocPiece>'
            )
            for ln, tiers_list in enumerate(lignes, start=1):
                parts.append(
                    f'<LigneDePiece><BlocLignePiece><{info_ligne}><IdLigne V="{ln}"/>'
                    f'<Nature V="6068"/><MtHT V="50.00"/></{info_ligne}></BlocLignePiece>'
                )
                parts.extend(tiers_xml(t, recette=recette) for t in tiers_list)
                parts.append("</LigneDePiece>")
            parts.append("</Piece>")
        parts.append("</Bordereau>")
    parts.append(f"</{flux}>")
    if pj_bytes:
        parts.append(
            '<PES_PJ><EnTetePES_PJ><IdVer V="1"/></EnTetePES_PJ><PJ><Contenu><Fichier MIMEType="application/pdf">'
            + "QUFB" * (pj_bytes // 4)
            + '</Fichier></Contenu><IdUnique V="PJ1"/><NomPJ V="facture.pdf"/></PJ></PES_PJ>'
        )
    parts.append("</n:PES_Aller>")
    return "\n".join(parts).encode("iso-8859-1")


def single(tiers: dict, **kw) -> bytes:
    """One bordereau, one pièce, one ligne, one tiers."""
    return build_pes([[[[tiers]]]], **kw)
