"""Streaming reader of PES_Aller files.

A PES_Aller may weigh 500 MB: the reader never holds the tree. It listens to the "end" events of
a few container elements (EnTetePES, BlocBordereau, Piece, Bordereau, PJ, ...), turns each into
a small dataclass, then clears the element and drops its already-read siblings. Memory therefore
depends on the size of one pièce, not of the file.

Items come out in document order:
``Header`` -> ``Domaine`` -> (``BordereauHead`` -> ``Piece``* -> ``BordereauEnd``)* -> ``PJ``* ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from lxml import etree

from flows import xmlsafe
from flows.helios import NS_DS

DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # 1 GiB: the reader streams, the cap only guards the disk

DS_SIGNATURE = f"{{{NS_DS}}}Signature"

# Elements whose "end" event the reader handles (children are read through them).
CONTAINER_TAGS = (
    "Parametres",
    "EnTetePES",
    "EnTeteDepense",
    "EnTeteRecette",
    "BlocBordereau",
    "Piece",
    "Bordereau",
    "PJ",
    "PES_DepenseAller",
    "PES_RecetteAller",
    "PES_PJ",
    DS_SIGNATURE,
)

DOMAINS = {"PES_DepenseAller": "depense", "PES_RecetteAller": "recette"}


@dataclass
class Header:
    root_tag: str  # "{namespace}PES_Aller" as read (lets the validator check the namespace)
    root_id: str | None
    version: str | None = None
    typfic: str | None = None
    nomfic: str | None = None
    dtestr: str | None = None
    idpost: str | None = None
    idcoll: str | None = None
    codcol: str | None = None
    codbud: str | None = None
    libellecolbud: str | None = None
    line: int | None = None


@dataclass
class Domaine:
    domain: str  # "depense" | "recette"
    idver: str | None
    info_dematerialisee: str | None
    line: int | None = None


@dataclass
class Tiers:
    idtiers: str | None = None
    natidtiers: str | None = None
    reftiers: str | None = None
    cattiers: str | None = None
    natjur: str | None = None
    typtiers: str | None = None
    civilite: str | None = None
    nom: str | None = None
    complnom: str | None = None
    prenom: str | None = None
    adr1: str | None = None
    adr2: str | None = None
    adr3: str | None = None
    cp: str | None = None
    ville: str | None = None
    codres: str | None = None
    codpays: str | None = None
    has_bank: bool = False
    codeetab: str | None = None
    codeguic: str | None = None
    idcpte: str | None = None
    clerib: str | None = None
    bic: str | None = None
    iban: str | None = None
    titcpte: str | None = None
    line: int | None = None


@dataclass
class Ligne:
    index: int  # 1-based position in the pièce
    idligne: str | None
    nature: str | None
    mtht: str | None
    mttva: str | None
    modregl: str | None
    pjrefs: list[tuple[str | None, str | None]] = field(default_factory=list)  # (Support, IdUnique)
    tiers: list[Tiers] = field(default_factory=list)
    line: int | None = None


@dataclass
class Piece:
    domain: str
    bordereau_index: int
    index: int  # 1-based position in the bordereau
    idpce: str | None
    typpce: str | None
    natpce: str | None
    obj: str | None
    pjrefs: list[tuple[str | None, str | None]] = field(default_factory=list)
    lignes: list[Ligne] = field(default_factory=list)
    line: int | None = None


@dataclass
class BordereauHead:
    domain: str
    index: int  # 1-based position in the file (all domains)
    id_attr: str | None
    exer: str | None
    idbord: str | None
    dtebordem: str | None
    typbord: str | None
    nbrpce: str | None
    mtcumulannuel: str | None
    mtbordht: str | None
    mtbordtva: str | None
    line: int | None = None


@dataclass
class BordereauEnd:
    domain: str
    index: int
    id_attr: str | None
    pieces: int  # pièces actually present
    signed: bool  # an enveloped ds:Signature is the bordereau's last child
    line: int | None = None


@dataclass
class PJ:
    index: int
    idunique: str | None
    nompj: str | None
    typepj: str | None
    mimetype: str | None
    content_chars: int
    line: int | None = None


@dataclass
class GlobalSignature:
    """A ds:Signature directly under PES_Aller (signature of the whole flux)."""

    line: int | None = None


@dataclass
class Bordereau:
    """A whole bordereau with its pièces (see ``read_bordereaux``)."""

    head: BordereauHead
    pieces: list[Piece]
    signed: bool


PesItem = Union[Header, Domaine, BordereauHead, Piece, BordereauEnd, PJ, GlobalSignature]


def _v(parent: etree._Element | None, path: str) -> str | None:
    if parent is None:
        return None
    el = parent.find(path)
    return None if el is None else el.get("V")


def _pjrefs(parent: etree._Element | None) -> list[tuple[str | None, str | None]]:
    if parent is None:
        return []
    return [(_v(ref, "Support"), _v(ref, "IdUnique")) for ref in parent.iterfind("PJRef")]


def _tiers(el: etree._Element) -> Tiers:
    info = el.find("InfoTiers")
    adr = el.find("Adresse")
    bank = el.find("CpteBancaire")
    return Tiers(
        idtiers=_v(info, "IdTiers"),
        natidtiers=_v(info, "NatIdTiers"),
        reftiers=_v(info, "RefTiers"),
        cattiers=_v(info, "CatTiers"),
        natjur=_v(info, "NatJur"),
        typtiers=_v(info, "TypTiers"),
        civilite=_v(info, "Civilite"),
        nom=_v(info, "Nom"),
        complnom=_v(info, "ComplNom"),
        prenom=_v(info, "Prenom"),
        adr1=_v(adr, "Adr1"),
        adr2=_v(adr, "Adr2"),
        adr3=_v(adr, "Adr3"),
        cp=_v(adr, "CP"),
        ville=_v(adr, "Ville"),
        codres=_v(adr, "CodRes"),
        codpays=_v(adr, "CodPays"),
        has_bank=bank is not None,
        codeetab=_v(bank, "CodeEtab"),
        codeguic=_v(bank, "CodeGuic"),
        idcpte=_v(bank, "IdCpte"),
        clerib=_v(bank, "CleRib"),
        bic=_v(bank, "BIC"),
        iban=_v(bank, "IBAN"),
        titcpte=_v(bank, "TitCpte"),
        line=el.sourceline,
    )


def _drop(el: etree._Element) -> None:
    """Free an element that has been read, and the siblings read before it."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


class PesStreamReader:
    """Turns "end" events of container elements into PES items. Feed it every such element."""

    def __init__(self) -> None:
        self.parametres: etree._Element | None = None
        self._params: dict[str, str | None] = {}
        self.domain: str | None = None
        self.bordereau_count = 0
        self.piece_index = 0
        self.pj_index = 0
        self.current_head: BordereauHead | None = None

    def handle(self, el: etree._Element) -> Iterator[PesItem]:
        tag = el.tag
        if tag == "Parametres":
            self._params = {
                "version": _v(el, "Version"),
                "typfic": _v(el, "TypFic"),
                "nomfic": _v(el, "NomFic"),
            }
            return
        if tag == "EnTetePES":
            root = el.getroottree().getroot()
            yield Header(
                root_tag=root.tag,
                root_id=root.get("Id"),
                dtestr=_v(el, "DteStr"),
                idpost=_v(el, "IdPost"),
                idcoll=_v(el, "IdColl"),
                codcol=_v(el, "CodCol"),
                codbud=_v(el, "CodBud"),
                libellecolbud=_v(el, "LibelleColBud"),
                line=el.sourceline,
                **self._params,
            )
            return
        if tag in ("EnTeteDepense", "EnTeteRecette"):
            parent = el.getparent()
            self.domain = DOMAINS.get(parent.tag if parent is not None else "", "depense")
            yield Domaine(self.domain, _v(el, "IdVer"), _v(el, "InfoDematerialisee"), el.sourceline)
            return
        if tag == "BlocBordereau":
            parent = el.getparent()
            domain = self._domain_of(parent)
            self.bordereau_count += 1
            self.piece_index = 0
            self.current_head = BordereauHead(
                domain=domain,
                index=self.bordereau_count,
                id_attr=parent.get("Id") if parent is not None else None,
                exer=_v(el, "Exer"),
                idbord=_v(el, "IdBord"),
                dtebordem=_v(el, "DteBordEm"),
                typbord=_v(el, "TypBord"),
                nbrpce=_v(el, "NbrPce"),
                mtcumulannuel=_v(el, "MtCumulAnnuel"),
                mtbordht=_v(el, "MtBordHT") if domain == "depense" else _v(el, "MtBordHt"),
                mtbordtva=_v(el, "MtBordTVA"),
                line=el.sourceline,
            )
            yield self.current_head
            return
        if tag == "Piece":
            yield self._piece(el)
            _drop(el)
            return
        if tag == "Bordereau":
            head = self.current_head
            if head is None or head.index != self.bordereau_count:  # bordereau without BlocBordereau
                self.bordereau_count += 1
                self.piece_index = 0
            yield BordereauEnd(
                domain=self._domain_of(el),
                index=self.bordereau_count,
                id_attr=el.get("Id"),
                pieces=self.piece_index,
                signed=el.find(DS_SIGNATURE) is not None,
                line=el.sourceline,
            )
            self.current_head = None
            self.piece_index = 0
            _drop(el)
            return
        if tag == "PJ":
            self.pj_index += 1
            fichier = el.find("Contenu/Fichier")
            yield PJ(
                index=self.pj_index,
                idunique=_v(el, "IdUnique"),
                nompj=_v(el, "NomPJ"),
                typepj=_v(el, "TypePJ"),
                mimetype=None if fichier is None else fichier.get("MIMEType"),
                content_chars=len(fichier.text or "") if fichier is not None else 0,
                line=el.sourceline,
            )
            _drop(el)
            return
        if tag == DS_SIGNATURE:
            parent = el.getparent()
            if parent is not None and parent.getparent() is None:  # directly under the root
                yield GlobalSignature(el.sourceline)
            if parent is None or parent.tag != "Bordereau":
                el.clear(keep_tail=False)
            return
        if tag in ("PES_DepenseAller", "PES_RecetteAller", "PES_PJ"):
            _drop(el)

    def _domain_of(self, bordereau: etree._Element | None) -> str:
        parent = bordereau.getparent() if bordereau is not None else None
        if parent is not None and parent.tag in DOMAINS:
            return DOMAINS[parent.tag]
        return self.domain or "depense"

    def _piece(self, el: etree._Element) -> Piece:
        self.piece_index += 1
        domain = self._domain_of(el.getparent())
        bloc = el.find("BlocPiece")
        info = bloc.find("InfoPce") if bloc is not None and domain == "depense" else bloc
        lignes = []
        for n, lp in enumerate(el.iterfind("LigneDePiece"), start=1):
            bl = lp.find("BlocLignePiece")
            il = None
            if bl is not None:
                il = bl.find("InfoLignePce")
                if il is None:
                    il = bl.find("InfoLignePiece")
            lignes.append(
                Ligne(
                    index=n,
                    idligne=_v(il, "IdLigne"),
                    nature=_v(il, "Nature"),
                    mtht=_v(il, "MtHT"),
                    mttva=_v(il, "MtTVA"),
                    modregl=_v(il, "ModRegl"),
                    pjrefs=_pjrefs(il),
                    tiers=[_tiers(t) for t in lp.iterfind("Tiers")],
                    line=lp.sourceline,
                )
            )
        return Piece(
            domain=domain,
            bordereau_index=self.bordereau_count,
            index=self.piece_index,
            idpce=_v(info, "IdPce"),
            typpce=_v(info, "TypPce"),
            natpce=_v(info, "NatPce"),
            obj=_v(info, "Obj") if domain == "depense" else _v(info, "ObjPce"),
            pjrefs=_pjrefs(info),
            lignes=lignes,
            line=el.sourceline,
        )


def items_from_events(events: Iterable[tuple[str, etree._Element]]) -> Iterator[PesItem]:
    """Run the reader over (event, element) pairs from any lxml iterparse on CONTAINER_TAGS."""
    reader = PesStreamReader()
    for _event, el in events:
        yield from reader.handle(el)


def iter_pes(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[PesItem]:
    """Stream the items of a PES_Aller file (raises lxml.etree.XMLSyntaxError if malformed)."""
    events = xmlsafe.iterparse(Path(path), events=("end",), tag=CONTAINER_TAGS, max_bytes=max_bytes)
    yield from items_from_events(events)


def read_bordereaux(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Header | Bordereau | PJ]:
    """Like iter_pes, but yields whole bordereaux (one at a time, with their pièces)."""
    head: BordereauHead | None = None
    pieces: list[Piece] = []
    for item in iter_pes(path, max_bytes=max_bytes):
        if isinstance(item, BordereauHead):
            head, pieces = item, []
        elif isinstance(item, Piece):
            pieces.append(item)
        elif isinstance(item, BordereauEnd):
            if head is not None:
                yield Bordereau(head=head, pieces=pieces, signed=item.signed)
            head, pieces = None, []
        elif isinstance(item, (Header, PJ)):
            yield item
