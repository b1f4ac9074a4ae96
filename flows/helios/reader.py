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
    "PES_Marche",
    "PES_Facture",
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
    n_tiers: int = 0  # Tiers blocks present (also when the reader does not read them)
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


PesItem = Header | Domaine | BordereauHead | Piece | BordereauEnd | PJ | GlobalSignature


def pes_v(parent: etree._Element | None, path: str) -> str | None:
    """The value of a PES leaf (`<Tag V="..."/>`) at `path` under `parent`; None when absent."""
    if parent is None:
        return None
    el = parent.find(path)
    return None if el is None else el.get("V")


def _values(parent: etree._Element | None) -> dict[str, str | None]:
    """{child tag: its V} in one pass over the children (much cheaper than one find() per field)."""
    if parent is None:
        return {}
    out: dict[str, str | None] = {}
    for child in parent:
        tag = child.tag
        if isinstance(tag, str) and tag not in out:
            out[tag] = child.get("V")
    return out


def _pjrefs(parent: etree._Element | None) -> list[tuple[str | None, str | None]]:
    if parent is None:
        return []
    return [(pes_v(ref, "Support"), pes_v(ref, "IdUnique")) for ref in parent.iterfind("PJRef")]


def _tiers(el: etree._Element) -> Tiers:
    info: dict[str, str | None] = {}
    adr: dict[str, str | None] = {}
    bank: dict[str, str | None] = {}
    has_bank = False
    for child in el:
        tag = child.tag
        if tag == "InfoTiers":
            info = _values(child)
        elif tag == "Adresse":
            adr = _values(child)
        elif tag == "CpteBancaire":
            bank = _values(child)
            has_bank = True
    g = info.get
    a = adr.get
    b = bank.get
    return Tiers(
        idtiers=g("IdTiers"),
        natidtiers=g("NatIdTiers"),
        reftiers=g("RefTiers"),
        cattiers=g("CatTiers"),
        natjur=g("NatJur"),
        typtiers=g("TypTiers"),
        civilite=g("Civilite"),
        nom=g("Nom"),
        complnom=g("ComplNom"),
        prenom=g("Prenom"),
        adr1=a("Adr1"),
        adr2=a("Adr2"),
        adr3=a("Adr3"),
        cp=a("CP"),
        ville=a("Ville"),
        codres=a("CodRes"),
        codpays=a("CodPays"),
        has_bank=has_bank,
        codeetab=b("CodeEtab"),
        codeguic=b("CodeGuic"),
        idcpte=b("IdCpte"),
        clerib=b("CleRib"),
        bic=b("BIC"),
        iban=b("IBAN"),
        titcpte=b("TitCpte"),
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

    def __init__(self, *, read_tiers: bool = True, tiers_rows: list | None = None) -> None:
        self.read_tiers = read_tiers  # False: only count the Tiers blocks (faster, for the validator)
        # A list given here receives one row per Tiers occurrence, in flows.quality.extract's
        # COLUMNS order: the validator's pass then feeds the tiers gate (the file is read once).
        self.tiers_rows = tiers_rows
        self._tiers_cache = None
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
                "version": pes_v(el, "Version"),
                "typfic": pes_v(el, "TypFic"),
                "nomfic": pes_v(el, "NomFic"),
            }
            return
        if tag == "EnTetePES":
            root = el.getroottree().getroot()
            yield Header(
                root_tag=root.tag,
                root_id=root.get("Id"),
                dtestr=pes_v(el, "DteStr"),
                idpost=pes_v(el, "IdPost"),
                idcoll=pes_v(el, "IdColl"),
                codcol=pes_v(el, "CodCol"),
                codbud=pes_v(el, "CodBud"),
                libellecolbud=pes_v(el, "LibelleColBud"),
                line=el.sourceline,
                **self._params,
            )
            return
        if tag in ("EnTeteDepense", "EnTeteRecette"):
            parent = el.getparent()
            self.domain = DOMAINS.get(parent.tag if parent is not None else "", "depense")
            yield Domaine(self.domain, pes_v(el, "IdVer"), pes_v(el, "InfoDematerialisee"), el.sourceline)
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
                exer=pes_v(el, "Exer"),
                idbord=pes_v(el, "IdBord"),
                dtebordem=pes_v(el, "DteBordEm"),
                typbord=pes_v(el, "TypBord"),
                nbrpce=pes_v(el, "NbrPce"),
                mtcumulannuel=pes_v(el, "MtCumulAnnuel"),
                mtbordht=pes_v(el, "MtBordHT") if domain == "depense" else pes_v(el, "MtBordHt"),
                mtbordtva=pes_v(el, "MtBordTVA"),
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
                idunique=pes_v(el, "IdUnique"),
                nompj=pes_v(el, "NomPJ"),
                typepj=pes_v(el, "TypePJ"),
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
        if tag in ("PES_Marche", "PES_Facture"):
            # content checked by the schema; the domain counts (a marché-only flux is not empty)
            idver = pes_v(el, "EnTeteMarche/IdVer") if tag == "PES_Marche" else pes_v(el, "IdVer")
            yield Domaine("marche" if tag == "PES_Marche" else "facture", idver, None, el.sourceline)
            _drop(el)
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
        info_el = None
        lignes = []
        n = 0
        for child in el:
            tag = child.tag
            if tag == "BlocPiece":
                info_el = child.find("InfoPce") if domain == "depense" else child
            elif tag == "LigneDePiece":
                n += 1
                lignes.append(self._ligne(child, n, self.read_tiers))
        info = _values(info_el)
        if self.tiers_rows is not None:
            self._tiers_rows(el, domain, lignes)
        return Piece(
            domain=domain,
            bordereau_index=self.bordereau_count,
            index=self.piece_index,
            idpce=info.get("IdPce"),
            typpce=info.get("TypPce"),
            natpce=info.get("NatPce"),
            obj=info.get("Obj") if domain == "depense" else info.get("ObjPce"),
            pjrefs=_pjrefs(info_el) if "PJRef" in info else [],
            lignes=lignes,
            line=el.sourceline,
        )

    def _tiers_rows(self, el: etree._Element, domain: str, lignes: list[Ligne]) -> None:
        """Rows of the tiers gate for the Tiers of this pièce (same values as iter_tiers_rows)."""
        if self._tiers_cache is None:
            from flows.quality.extract import TiersCache

            self._tiers_cache = TiersCache()
        tiers_row = self._tiers_cache.row
        idpce = None  # as the gate's reader: the last IdPce of BlocPiece (recette) or BlocPiece/InfoPce
        for bloc in el:
            if bloc.tag == "BlocPiece":
                for c in bloc:
                    if c.tag == "IdPce":
                        idpce = c.get("V")
                    elif c.tag == "InfoPce":
                        for cc in c:
                            if cc.tag == "IdPce":
                                idpce = cc.get("V")
        head = self.current_head
        if head is None or head.index != self.bordereau_count:
            head = None
        idbord, exer = (head.idbord, head.exer) if head is not None else (None, None)
        k = 0
        for child in el:
            if child.tag != "LigneDePiece":
                continue
            idligne = lignes[k].idligne
            k += 1
            position = 0
            for t in child:
                if t.tag == "Tiers":
                    position += 1
                    self.tiers_rows.append(tiers_row(t, domain, idbord, exer, idpce, idligne, position))

    @staticmethod
    def _ligne(lp: etree._Element, n: int, read_tiers: bool = True) -> Ligne:
        il = None
        tiers = []
        n_tiers = 0
        for child in lp:
            tag = child.tag
            if tag == "BlocLignePiece":
                for sub in child:
                    if sub.tag in ("InfoLignePce", "InfoLignePiece"):
                        il = sub
                        break
            elif tag == "Tiers":
                n_tiers += 1
                if read_tiers:
                    tiers.append(_tiers(child))
        v = _values(il)
        return Ligne(
            index=n,
            idligne=v.get("IdLigne"),
            nature=v.get("Nature"),
            mtht=v.get("MtHT"),
            mttva=v.get("MtTVA"),
            modregl=v.get("ModRegl"),
            pjrefs=_pjrefs(il) if "PJRef" in v else [],
            tiers=tiers,
            n_tiers=n_tiers,
            line=lp.sourceline,
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
