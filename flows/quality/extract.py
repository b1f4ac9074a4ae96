"""Streaming extraction of every tiers occurrence of a PES_Aller into a pandas DataFrame.

A PES_Aller can weigh up to ~128 MiB (mostly base64 attachments and signatures), so the tree is never
built: lxml iterparse (hardened, through flows.xmlsafe) walks it and every finished bordereau /
pièce / ligne / PJ subtree is freed at once, keeping memory flat whatever the file size. The frame
has one row per `Tiers` occurrence with where it sits (flux, bordereau, exercice, pièce, ligne,
position in the ligne, source line) and every tiers field as read: a string, "" when the element is
there with an empty V, None when the element is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

from flows import xmlsafe
from flows.findings import UnreadableFile

if TYPE_CHECKING:  # pandas is imported where a frame is built: the row-wise engine never needs it
    import pandas as pd

CONTEXT_COLUMNS = ["flux", "bordereau", "exercice", "piece", "ligne", "position", "line"]

INFO_TIERS_FIELDS = [
    "IdTiers",
    "NatIdTiers",
    "DteIdTiers",
    "RefTiers",
    "CatTiers",
    "NatJur",
    "TypTiers",
    "Civilite",
    "Nom",
    "ComplNom",
    "Prenom",
]
ADRESSE_FIELDS = ["TypAdr", "Adr1", "Adr2", "Adr3", "CP", "Ville", "CodRes", "CodPays"]
BANQUE_FIELDS = [
    "IdPayInt",
    "IdBancInt",
    "CodeEtab",
    "CodeGuic",
    "IdCpte",
    "CleRib",
    "BIC",
    "IBAN",
    "LibBanc",
    "TitCpte",
]
BLOCK_COLUMNS = ["Adresse", "CpteBancaire"]  # "1" when the block is present, None otherwise
TIERS_FIELDS = INFO_TIERS_FIELDS + ADRESSE_FIELDS + BANQUE_FIELDS
COLUMNS = CONTEXT_COLUMNS + TIERS_FIELDS + BLOCK_COLUMNS

_BLOCKS = {
    "InfoTiers": frozenset(INFO_TIERS_FIELDS),
    "Adresse": frozenset(ADRESSE_FIELDS),
    "CpteBancaire": frozenset(BANQUE_FIELDS),
}
_COL_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_BLOCK_INDEX = {block: {f: _COL_INDEX[f] for f in fields} for block, fields in _BLOCKS.items()}
_FLUX = {"PES_DepenseAller": "depense", "PES_RecetteAller": "recette"}
# Subtrees freed as soon as they end (with their already-processed preceding siblings).
_FREE = frozenset({"LigneDePiece", "Piece", "Bordereau", "PJ", "Signature"})


def _local(tag: object) -> str:
    if not isinstance(tag, str):  # comments, processing instructions
        return ""
    return tag.rsplit("}", 1)[-1]


def _free(elem: etree._Element) -> None:
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


def _tiers_row(tiers: etree._Element, ctx: dict) -> list:
    return tiers_row(tiers, ctx["flux"], ctx["bordereau"], ctx["exercice"], ctx["piece"], ctx["ligne"], ctx["position"])


def tiers_row(tiers: etree._Element, flux, bordereau, exercice, piece, ligne, position: int) -> list:
    """One row (COLUMNS order) for a Tiers element; also called by the validator's single pass
    (flows.helios.reader), so both readings of a file give the same rows."""
    return _context(tiers_fields(tiers), flux, bordereau, exercice, piece, ligne, position, tiers.sourceline)


def _context(fields: list, flux, bordereau, exercice, piece, ligne, position, line) -> list:
    row = fields.copy()
    row[0] = flux
    row[1] = bordereau
    row[2] = exercice
    row[3] = piece
    row[4] = ligne
    row[5] = position
    row[6] = line
    return row


class TiersCache:
    """The field part of the rows of Tiers already seen in this file, keyed by the Tiers' exact
    serialisation (libxml2 serialises in C, about twice as fast as reading the ~25 fields in
    Python): a supplier paid on many lignes is read once. Identical bytes, identical fields."""

    def __init__(self, max_entries: int = 10_000) -> None:  # bounded: ~10 MB of keys at most
        self.max_entries = max_entries
        self._fields: dict[bytes, list] = {}

    def row(self, tiers: etree._Element, flux, bordereau, exercice, piece, ligne, position: int) -> list:
        key = etree.tostring(tiers, with_tail=False)
        fields = self._fields.get(key)
        if fields is None:
            fields = tiers_fields(tiers)
            if len(self._fields) < self.max_entries:
                self._fields[key] = fields
        return _context(fields, flux, bordereau, exercice, piece, ligne, position, tiers.sourceline)


def tiers_fields(tiers: etree._Element) -> list:
    """A row (COLUMNS order) with the tiers fields filled and the context columns empty."""
    row: list = [None] * len(COLUMNS)
    for block in tiers:  # children are unqualified: their tag is the plain name
        wanted = _BLOCK_INDEX.get(block.tag)
        if wanted is None:
            continue
        if block.tag != "InfoTiers":
            row[_COL_INDEX[block.tag]] = "1"
        for field in block:
            i = wanted.get(field.tag)
            if i is not None and row[i] is None:  # first occurrence wins
                row[i] = field.get("V", "")
    return row


# The only elements Python hears about; lxml filters all the others in C (a tiers has ~25 elements,
# so this keeps the per-tiers Python work to reading its own children).
_TAGS = [
    "PES_DepenseAller", "PES_RecetteAller", "Bordereau", "Piece", "LigneDePiece",
    "Exer", "IdBord", "IdPce", "IdLigne", "Tiers", "PJ", "{*}Signature",
]  # fmt: skip


def _root_name(path: Path) -> str:
    """Local name of the root element, reading only the first chunk of the file."""
    with path.open("rb") as fh:
        xmlsafe.check_prolog(fh.read(65536))
        fh.seek(0)
        for _event, elem in xmlsafe.iterparse(fh, events=("start",)):
            return _local(elem.tag)
    return ""


def iter_tiers_rows(path: str | Path, *, max_bytes: int = xmlsafe.DEFAULT_MAX_BYTES):
    """Yield one list per tiers occurrence, in COLUMNS order. Raises UnreadableFile."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"Fichier introuvable : {path}")
    if path.stat().st_size == 0:
        raise UnreadableFile(f"Le fichier est vide : {path.name}")
    ctx: dict = dict(flux=None, bordereau=None, exercice=None, piece=None, ligne=None, position=0)
    try:
        if path.stat().st_size > max_bytes:
            raise xmlsafe.UnsafeXML(f"Le document XML dépasse la taille maximale autorisée ({max_bytes} octets).")
        root = _root_name(path)
        if root != "PES_Aller":
            raise UnreadableFile(
                f"Ce fichier n'est pas un PES_Aller (élément racine « {root} ») : "
                "le contrôle des tiers ne s'applique qu'aux flux PES_Aller."
            )
        for event, elem in xmlsafe.iterparse(path, events=("start", "end"), tag=_TAGS, max_bytes=max_bytes):
            name = _local(elem.tag)
            if event == "start":
                if name in _FLUX:
                    ctx["flux"] = _FLUX[name]
                elif name == "Bordereau":
                    ctx.update(bordereau=None, exercice=None, piece=None, ligne=None)
                elif name == "Piece":
                    ctx.update(piece=None, ligne=None)
                elif name == "LigneDePiece":
                    ctx.update(ligne=None, position=0)
                continue
            # end events
            if name == "Tiers":
                parent = elem.getparent()
                if parent is not None and _local(parent.tag) == "LigneDePiece":
                    ctx["position"] += 1
                    yield _tiers_row(elem, ctx)
                continue
            if name in ("IdBord", "Exer", "IdPce", "IdLigne"):
                parent = elem.getparent()
                pname = _local(parent.tag) if parent is not None else ""
                if name == "IdBord" and pname == "BlocBordereau":
                    ctx["bordereau"] = elem.get("V")
                elif name == "Exer" and pname == "BlocBordereau":
                    ctx["exercice"] = elem.get("V")
                elif name == "IdPce" and pname in ("InfoPce", "BlocPiece"):  # dépense / recette
                    ctx["piece"] = elem.get("V")
                elif name == "IdLigne" and pname in ("InfoLignePce", "InfoLignePiece"):
                    ctx["ligne"] = elem.get("V")
            elif name in _FREE:
                _free(elem)
    except xmlsafe.UnsafeXML as exc:
        raise UnreadableFile(str(exc)) from exc
    except etree.XMLSyntaxError as exc:
        raise UnreadableFile(f"Le fichier n'est pas un XML bien formé : {exc}") from exc


def extract_tiers(path: str | Path, *, max_bytes: int = xmlsafe.DEFAULT_MAX_BYTES) -> pd.DataFrame:
    """One row per tiers occurrence of a PES_Aller, columns COLUMNS (object dtype, None when absent)."""
    rows = list(iter_tiers_rows(path, max_bytes=max_bytes))
    return frame_from_rows(rows)


def frame_from_rows(rows: list[list]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLUMNS, dtype=object)
    df["position"] = df["position"].astype("int64")
    return df


def empty_frame() -> pd.DataFrame:
    return frame_from_rows([])


# --------------------------------------------------------------------------- vectorised helpers


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    s = df[name].astype(object)
    return s.where(s.notna(), None)


def place_labels(df: pd.DataFrame) -> pd.Series:
    """French location of each occurrence: "bordereau 12 (2024) / pièce 3 / ligne 1" (+ " / tiers 2"
    when a recette ligne carries several tiers)."""
    bord = _col(df, "bordereau").fillna("?")
    exer = _col(df, "exercice")
    label = "bordereau " + bord.astype(str)
    label = label.where(exer.isna(), label + " (" + exer.fillna("").astype(str) + ")")
    label = label + " / pièce " + _col(df, "piece").fillna("?").astype(str)
    label = label + " / ligne " + _col(df, "ligne").fillna("?").astype(str)
    pos = df["position"].astype("int64")
    return label.where(pos <= 1, label + " / tiers " + pos.astype(str))


def tiers_keys(df: pd.DataFrame) -> pd.Series:
    """A key identifying the same tiers across the file: its national identifier (NatIdTiers:IdTiers)
    when given, else the ordonnateur's RefTiers, else the name and postal code."""
    ident = _col(df, "IdTiers").str.strip()
    nat = _col(df, "NatIdTiers").fillna("")
    ref = _col(df, "RefTiers").str.strip()
    nom = _col(df, "Nom").fillna("").str.strip().str.upper() + "|" + _col(df, "CP").fillna("")
    key = "NOM:" + nom
    key = key.where(ref.isna() | (ref == ""), "REF:" + ref.fillna(""))
    key = key.where(ident.isna() | (ident == ""), "ID:" + nat + ":" + ident.fillna(""))
    return key


def bank_signatures(df: pd.DataFrame) -> pd.Series:
    """The bank account of each occurrence, normalised (IBAN, else the 4 RIB parts), None if none."""
    iban = _col(df, "IBAN").str.replace(" ", "", regex=False).str.upper()
    rib = (
        _col(df, "CodeEtab").fillna("")
        + _col(df, "CodeGuic").fillna("")
        + _col(df, "IdCpte").fillna("")
        + _col(df, "CleRib").fillna("")
    ).str.upper()
    sig = rib.where(rib != "", None)
    sig = ("IBAN " + iban).where(iban.notna() & (iban != ""), "RIB " + sig.fillna(""))
    return sig.where(sig != "RIB ", None)
