"""What is in a PES_Aller, told to an agent in French (collectivité, budget, bordereaux, amounts...).

Streams like the validator (constant memory) but checks nothing: use validate_pes for that.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from flows.findings import UnreadableFile
from flows.helios.reader import (
    DEFAULT_MAX_BYTES,
    PJ,
    BordereauEnd,
    BordereauHead,
    GlobalSignature,
    Header,
    Piece,
    iter_pes,
)
from flows.helios.validate import PesCollector

DOMAIN_LABELS = {"depense": "dépense", "recette": "recette", "marche": "marché (PES_Marche)",
                 "facture": "facture (PES_Facture)"}
MAX_LISTED_BORDEREAUX = 200  # the detail list stops there; totals always cover the whole file


def inspect_pes(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Summary of a PES_Aller: header, per-bordereau figures, totals, tiers and signatures."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"Fichier introuvable : {path}")
    if path.stat().st_size == 0:
        raise UnreadableFile(f"Le fichier est vide : {path}")
    collector = PesCollector(check_rules=False)
    bordereaux: list[dict] = []
    current: dict | None = None
    header: Header | None = None
    for item in iter_pes(path, max_bytes=max_bytes):
        collector.feed(item)
        if isinstance(item, Header):
            header = item
        elif isinstance(item, BordereauHead):
            current = {
                "domaine": item.domain,
                "id": item.id_attr,
                "exercice": item.exer,
                "idbord": item.idbord,
                "type": item.typbord,
                "date": item.dtebordem,
                "nbrpce": item.nbrpce,
                "pieces": 0,
                "lignes": 0,
                "montant_declare": item.mtbordht,
                "montant_lignes": Decimal("0"),
                "signe": False,
            }
        elif isinstance(item, Piece) and current is not None:
            current["pieces"] += 1
            current["lignes"] += len(item.lignes)
            for ln in item.lignes:
                try:
                    current["montant_lignes"] += Decimal(ln.mtht or "0")
                except ArithmeticError:
                    pass
        elif isinstance(item, BordereauEnd) and current is not None:
            current["signe"] = item.signed
            current["montant_lignes"] = f"{current['montant_lignes']:.2f}"
            if len(bordereaux) < MAX_LISTED_BORDEREAUX:
                bordereaux.append(current)
            current = None
        elif isinstance(item, (PJ, GlobalSignature)):
            pass
    if header is None:
        raise UnreadableFile(f"Ce fichier n'est pas un PES_Aller lisible (pas d'EnTetePES) : {path}")
    s = collector.summary()
    return {
        "fichier": str(path),
        "taille_octets": path.stat().st_size,
        "nomfic": header.nomfic,
        "typfic": header.typfic,
        "date": header.dtestr,
        "collectivite": {
            "idcoll": header.idcoll,
            "idpost": header.idpost,
            "codcol": header.codcol,
            "libelle": header.libellecolbud,
        },
        "budget": {"codbud": header.codbud, "libelle": header.libellecolbud},
        "domaines": s["domaines"],
        "bordereaux": s["bordereaux"],
        "pieces": s["pieces"],
        "lignes": s["lignes"],
        "montant_total": s["montant_total"],
        "montant_bordereaux": s["montant_bordereaux"],
        "tiers": s["tiers"],
        "tiers_distincts": s["tiers_distincts"] or 0,
        "pj": s["pj"],
        "signatures": {
            "bordereaux_signes": s["bordereaux_signes"],
            "signature_globale": s["signature_globale"],
            "signe": s["signed"],
        },
        "detail_bordereaux": bordereaux,
        "detail_tronque": s["bordereaux"] > len(bordereaux),
    }


def _euros(value: str | None) -> str:
    if value is None:
        return "?"
    try:
        d = Decimal(value)
    except ArithmeticError:
        return value
    whole, _, cents = f"{d:.2f}".partition(".")
    sign = "-" if whole.startswith("-") else ""
    whole = whole.lstrip("-")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return f"{sign}{' '.join(groups) or '0'},{cents} €"


def format_inspection(info: dict) -> str:
    """French text rendering of inspect_pes() for an agent."""
    col = info["collectivite"]
    sig = info["signatures"]
    lines = [
        f"Fichier PES : {info['fichier']} ({info['taille_octets']} octets)",
        f"NomFic : {info['nomfic'] or '(absent)'} — type {info['typfic'] or '?'} — émis le {info['date'] or '?'}",
        f"Collectivité : SIRET {col['idcoll'] or '?'}, code collectivité {col['codcol'] or '?'}, poste comptable {col['idpost'] or '?'}",
        f"Budget : {info['budget']['codbud'] or '?'}" + (f" ({info['budget']['libelle']})" if info["budget"]["libelle"] else ""),
        f"Domaines : {', '.join(DOMAIN_LABELS.get(d, d) for d in info['domaines']) or 'aucun'}",
        f"Bordereaux : {info['bordereaux']} — pièces : {info['pieces']} — lignes : {info['lignes']}",
        f"Montant total des lignes : {_euros(info['montant_total'])} (déclaré par les bordereaux : {_euros(info['montant_bordereaux'])})",
        f"Tiers : {info['tiers']} occurrence(s), {info['tiers_distincts']} distinct(s)",
        f"Pièces justificatives : {info['pj']}",
    ]
    if sig["signature_globale"]:
        lines.append("Signatures : signature globale du flux présente")
    elif info["bordereaux"]:
        lines.append(f"Signatures : {sig['bordereaux_signes']} bordereau(x) signé(s) sur {info['bordereaux']}")
    else:
        lines.append("Signatures : aucune")
    if info["detail_bordereaux"]:
        lines.append("")
        lines.append("Détail des bordereaux :")
        for b in info["detail_bordereaux"]:
            kind = "mandats" if b["domaine"] == "depense" else "titres"
            lines.append(
                f"  - bordereau {b['idbord'] or '?'} ({kind}, exercice {b['exercice'] or '?'}, type {b['type'] or '?'},"
                f" du {b['date'] or '?'}) : {b['pieces']} pièce(s) (NbrPce {b['nbrpce'] or '?'}), {b['lignes']} ligne(s),"
                f" {_euros(b['montant_lignes'])}, {'signé' if b['signe'] else 'non signé'}"
            )
        if info["detail_tronque"]:
            lines.append(f"  … ({info['bordereaux'] - len(info['detail_bordereaux'])} autres bordereaux non détaillés)")
    return "\n".join(lines) + "\n"
