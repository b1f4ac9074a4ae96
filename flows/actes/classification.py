"""Classification of actes (matières and piece typologies), as returned by the préfecture (7-2).

Levels 1 and 2 of the matières are national; levels 3 to 5 and the typologies (CodeTypePJ) come
from the préfecture's RetourClassification. Without one, `national_default()` knows levels 1-2
and the main typologie of each nature, and cannot check deeper levels (warning, not error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from flows.actes import xmlutil as X
from flows.actes.model import NATURES, TYPOLOGIE_RE, nature_abbr

if TYPE_CHECKING:
    from flows.actes.model import Transmission
    from flows.config.models import Collectivite

# Main-document typologie of each nature when no classification is known (first = default).
DEFAULT_MAIN_TYPOLOGIES: dict[str, tuple[str, ...]] = {
    "DE": ("99_DE",),
    "AR": ("99_AR", "99_AT"),
    "AI": ("99_AI",),
    "CC": ("99_CO", "99_DC"),
    "BF": ("99_BU",),
    "AU": ("99_AU",),
}
DEFAULT_TYPOLOGIE_LABELS = {
    "99_DE": "Délibération", "99_AR": "Acte réglementaire", "99_AT": "Acte réglementaire",
    "99_AI": "Acte individuel", "99_CO": "Contrat", "99_DC": "Document contractuel",
    "99_BU": "Budget", "99_AU": "Autre document", "99_SE": "Fichier de signature électronique",
}

# National nomenclature, levels 1 and 2.
NATIONAL_MATIERES: dict[str, tuple[str, dict[str, str]]] = {
    "1": ("Commande publique", {
        "1": "Marchés publics", "2": "Délégation de service public", "3": "Conventions de mandat",
        "4": "Autres types de contrats", "5": "Transactions / protocole d'accord transactionnel",
        "6": "Actes relatifs à la maîtrise d'oeuvre", "7": "Actes spéciaux et divers"}),
    "2": ("Urbanisme", {
        "1": "Documents d'urbanisme", "2": "Actes relatifs au droit d'occupation ou d'utilisation des sols",
        "3": "Droit de préemption urbain"}),
    "3": ("Domaine et patrimoine", {
        "1": "Acquisitions", "2": "Aliénations", "3": "Locations", "4": "Limites territoriales",
        "5": "Autres actes de gestion du domaine public", "6": "Autres actes de gestion du domaine privé"}),
    "4": ("Fonction publique", {
        "1": "Personnels titulaires et stagiaires de la F.P.T.", "2": "Personnels contractuels",
        "3": "Fonction publique hospitalière", "4": "Autres catégories de personnels",
        "5": "Régime indemnitaire"}),
    "5": ("Institutions et vie politique", {
        "1": "Élection exécutif", "2": "Fonctionnement des assemblées", "3": "Désignation de représentants",
        "4": "Délégation de fonctions", "5": "Délégation de signature", "6": "Exercice des mandats locaux",
        "7": "Intercommunalité", "8": "Décision d'ester en justice"}),
    "6": ("Libertés publiques et pouvoirs de police", {
        "1": "Police municipale", "2": "Pouvoir du président du conseil départemental",
        "3": "Pouvoir du président du conseil régional", "4": "Autres actes réglementaires",
        "5": "Actes pris au nom de l'État et soumis au contrôle hiérarchique"}),
    "7": ("Finances locales", {
        "1": "Décisions budgétaires", "2": "Fiscalité", "3": "Emprunts", "4": "Interventions économiques",
        "5": "Subventions", "6": "Contributions budgétaires", "7": "Avances", "8": "Fonds de concours",
        "9": "Prise de participation (SEM, etc.)", "10": "Divers"}),
    "8": ("Domaines de compétences par thèmes", {
        "1": "Enseignement", "2": "Aide sociale", "3": "Voirie", "4": "Aménagement du territoire",
        "5": "Politique de la ville, habitat, logement", "6": "Emploi, formation professionnelle",
        "7": "Transports", "8": "Environnement", "9": "Culture"}),
    "9": ("Autres domaines de compétences", {
        "1": "Autres domaines de compétences des communes",
        "2": "Autres domaines de compétences des départements",
        "3": "Autres domaines de compétences des régions", "4": "Voeux et motions"}),
}


@dataclass
class MatiereNode:
    code: str  # full dotted code, "7.10"
    label: str
    children: list[MatiereNode] = field(default_factory=list)


@dataclass
class NatureClassification:
    abbr: str
    code: int
    label: str
    typologies: dict[str, str] = field(default_factory=dict)  # CodeTypePJ -> label (document order)


@dataclass
class Classification:
    date: date | None
    natures: dict[str, NatureClassification]
    tree: list[MatiereNode]
    national_default: bool = False
    matieres: dict[str, str] = field(default_factory=dict)  # every level, "7.10.2" -> label

    def __post_init__(self) -> None:
        if not self.matieres:
            def walk(nodes: list[MatiereNode]) -> None:
                for n in nodes:
                    self.matieres[n.code] = n.label
                    walk(n.children)
            walk(self.tree)

    def has_matiere(self, code: str) -> bool:
        return code in self.matieres

    def matiere_label(self, code: str) -> str:
        return self.matieres.get(code, "")

    def check_matiere(self, code: str) -> tuple[str, str]:
        """('ok'|'warning'|'error', French reason)."""
        if code in self.matieres:
            return "ok", ""
        parts = code.split(".")
        if self.national_default and len(parts) > 2 and ".".join(parts[:2]) in self.matieres:
            return "warning", (
                f"les niveaux 3 à 5 de la matière {code} dépendent de la préfecture et ne peuvent pas être "
                "vérifiés sans sa classification"
            )
        known = ".".join(parts[:2])
        if known in self.matieres:
            return "error", f"la sous-matière {code} n'existe pas dans la classification (seule {known} existe)"
        return "error", f"la matière {code} n'existe pas dans la classification"

    def typologies(self, nature: str) -> dict[str, str]:
        n = self.natures.get(nature_abbr(nature))
        return dict(n.typologies) if n else {}

    def main_typologies(self, nature: str) -> tuple[str, ...]:
        """Typologies acceptable for the main document of an acte of this nature."""
        abbr = nature_abbr(nature)
        if self.national_default:
            return DEFAULT_MAIN_TYPOLOGIES[abbr]
        return tuple(self.typologies(abbr))

    def default_typologie(self, nature: str) -> str:
        abbr = nature_abbr(nature)
        typos = self.typologies(abbr)
        preferred = f"99_{'BU' if abbr == 'BF' else abbr}"
        if preferred in typos:
            return preferred
        for t in DEFAULT_MAIN_TYPOLOGIES[abbr]:
            if t in typos:
                return t
        return next(iter(typos), DEFAULT_MAIN_TYPOLOGIES[abbr][0])


def national_default(day: date | None = None) -> Classification:
    """Levels 1-2 and default typologies; `day` is the classification date if one is known."""
    tree = [
        MatiereNode(c1, l1, [MatiereNode(f"{c1}.{c2}", l2) for c2, l2 in subs.items()])
        for c1, (l1, subs) in NATIONAL_MATIERES.items()
    ]
    natures = {
        abbr: NatureClassification(abbr, code, label, {t: DEFAULT_TYPOLOGIE_LABELS[t]
                                                       for t in DEFAULT_MAIN_TYPOLOGIES[abbr]})
        for abbr, (code, label) in NATURES.items()
    }
    return Classification(date=day, natures=natures, tree=tree, national_default=True)


def parse_retour_classification(data: bytes) -> Classification:
    """Read a RetourClassification (7-2). ValueError (French) if it is something else."""
    root = X.parse(data)
    if X.local(root) != "RetourClassification":
        raise ValueError(f"ce document n'est pas une RetourClassification mais « {X.local(root)} »")
    day_text = X.text(root, "DateClassification")
    day = date.fromisoformat(day_text) if day_text else None
    natures: dict[str, NatureClassification] = {}
    for n in root.iterfind(f"{X.q('NaturesActes')}/{X.q('NatureActe')}"):
        abbr = X.attr(n, "TypeAbrege").strip().upper()
        code_text = X.attr(n, "CodeNatureActe")
        try:
            code = int(code_text) if code_text else NATURES[abbr][0]
        except (ValueError, KeyError):
            code = 0
        typos = {X.attr(t, "CodeTypePJ"): X.attr(t, "Libelle") for t in n.iterfind(X.q("TypePJNatureActe"))}
        natures[abbr] = NatureClassification(abbr, code, X.attr(n, "Libelle"), typos)

    def walk(el, prefix: str, level: int) -> list[MatiereNode]:
        nodes = []
        for m in el.iterfind(X.q(f"Matiere{level}")):
            code = X.attr(m, "CodeMatiere").strip()
            full = f"{prefix}.{code}" if prefix else code
            node = MatiereNode(full, X.attr(m, "Libelle").strip())
            if level < 5:
                node.children = walk(m, full, level + 1)
            nodes.append(node)
        return nodes

    matieres = X.child(root, "Matieres")
    tree = walk(matieres, "", 1) if matieres is not None else []
    return Classification(date=day, natures=natures, tree=tree)


def build_retour_classification(classification: Classification) -> bytes:
    """The 7-2 message for a classification (préfecture simulator)."""
    if classification.date is None:
        raise ValueError("la classification n'a pas de date : impossible de construire la RetourClassification")
    root = X.root("RetourClassification")
    X.sub(root, "DateClassification", classification.date.isoformat())
    natures = X.sub(root, "NaturesActes")
    for n in classification.natures.values():
        el = X.sub(natures, "NatureActe", CodeNatureActe=str(n.code), Libelle=n.label, TypeAbrege=n.abbr)
        typos = n.typologies or {t: DEFAULT_TYPOLOGIE_LABELS[t] for t in DEFAULT_MAIN_TYPOLOGIES[n.abbr]}
        for code, label in typos.items():
            X.sub(el, "TypePJNatureActe", CodeTypePJ=code, Libelle=label)
    matieres = X.sub(root, "Matieres")

    def emit(parent, nodes: list[MatiereNode], level: int) -> None:
        for node in nodes:
            el = X.sub(parent, f"Matiere{level}", CodeMatiere=node.code.rsplit(".", 1)[-1], Libelle=node.label)
            if level < 5:
                emit(el, node.children, level + 1)

    emit(matieres, classification.tree, 1)
    return X.to_bytes(root)


def build_reponse_sans_changement(day: date) -> bytes:
    root = X.root("ReponseClassificationSansChangement")
    X.sub(root, "DateClassification", day.isoformat())
    return X.to_bytes(root)


def build_demande_classification_xml(day: date | None = None) -> bytes:
    root = X.root("DemandeClassification")
    if day is not None:
        X.sub(root, "DateClassification", day.isoformat())
    return X.to_bytes(root)


def build_demande_classification(collectivite: Collectivite, date: date | None = None, *, serial: int = 1,
                                 trigram: str = "TDT", day: date | None = None,
                                 email: str | None = None) -> Transmission:
    """A 7-1 DemandeClassification in its archive; `date` is the classification the collectivité uses."""
    from flows.actes.transmission import package_messages

    name = f"{collectivite.departement}-{collectivite.siren}----7-1_0.xml"
    return package_messages(
        collectivite, kind="DemandeClassification", idacte="", message_name=name,
        message_xml=build_demande_classification_xml(date), files={}, serial=serial, trigram=trigram,
        day=day, email=email,
    )


def typologie_ok(code: str) -> bool:
    return bool(TYPOLOGIE_RE.match(code))
