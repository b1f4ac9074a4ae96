"""Generate realistic PES_Aller files (demo, tests, benchmarks), valid or with chosen defects.

Files are ISO-8859-1, valid against the project XSD and the official DGFiP one unless a defect
is asked for. Tiers look real: companies with a valid SIRET, natural persons with Civilite and
Prenom, French addresses with a 5-digit CP, bank accounts with valid IBAN/BIC; names carry
accents. ``generate_pes_file`` streams a big file to disk without building it in memory.
"""

from __future__ import annotations

import base64
import gzip
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import quoteattr

from flows.helios import NS_ALLER

DEFECTS = frozenset(
    {
        "nbrpce_mismatch",  # NbrPce differs from the pièces present (business)
        "nbrpce_zero",  # NbrPce = 0 (schema + business)
        "duplicate_idbord",  # two bordereaux with the same IdBord (business)
        "bad_idcoll",  # IdColl fails the SIRET key (business)
        "missing_nomfic",  # NomFic absent (schema + business)
        "missing_element",  # DteBordEm absent (schema)
        "bad_amount_type",  # MtHT "12,50" (schema)
        "wrong_order",  # IdBord before Exer (schema)
        "wrong_namespace",  # root in a wrong namespace (schema)
        "utf8_declared_latin1",  # UTF-8 bytes, ISO-8859-1 declared (encoding)
        "doctype",  # a DOCTYPE with an entity (hostile XML)
        "mtbordht_mismatch",  # MtBordHT differs from the sum of lines (business warning)
        "infodemat_unsigned",  # InfoDematerialisee=1 without signature (business)
        "missing_mtcumul",  # InfoDematerialisee=1 and no MtCumulAnnuel (business)
        "pjref_dangling",  # PJRef to a PJ that is not in PES_PJ (business)
        "duplicate_pj",  # two PJ with the same IdUnique (business)
        "bad_cp",  # CP on 4 digits (tiers; schema-valid)
        "bad_iban",  # IBAN with a wrong mod-97 key (tiers)
        "lowercase_iban",  # IBAN in lowercase after the country code (tiers; schema-valid)
        "lowercase_bic",  # BIC in lowercase (tiers; schema)
        "bad_siret_tiers",  # company SIRET with a wrong key (tiers)
        "civilite_on_company",  # Civilite on a company (tiers)
        "missing_civilite",  # natural person without Civilite/Prenom (tiers)
    }
)

_COMPANY_NAMES = [
    "Boulangerie Pâtisserie Léa",
    "Société Méridionale de Travaux",
    "Électricité Générale du Béarn",
    "Transports Landais Lafitte & Fils",
    "Imprimerie Côte d'Argent",
    "Garage de l'Adour",
    "Pépinières du Marsan",
    "Béton Armé Gascon",
    "Fournitures Scolaires Hélène",
    "Menuiserie Dupré Frères",
    "Cabinet Géomètre Ségur",
    "Restauration Collective Aquitaine",
]
_PERSON_NAMES = [
    ("Mme", "Hélène", "Lefèvre"),
    ("M.", "François", "Bézier"),
    ("M.", "Jérôme", "Castaing"),
    ("Mme", "Cécile", "Dubosc"),
    ("M.", "Gaël", "Larrouy"),
    ("Mme", "Maïté", "Saint-Géours"),
    ("M.", "Noël", "Dupérier"),
    ("Mme", "Agnès", "Labbé"),
]
_STREETS = [
    "rue de la Châtaigneraie",
    "avenue du Général-de-Gaulle",
    "place de l'Église",
    "chemin des Écoliers",
    "boulevard Saint-Médard",
    "allée des Tilleuls",
    "rue du Château-d'Eau",
    "route de Bayonne",
]
_TOWNS = [
    ("40000", "MONT-DE-MARSAN"),
    ("40100", "DAX"),
    ("64000", "PAU"),
    ("33000", "BORDEAUX"),
    ("31000", "TOULOUSE"),
    ("34000", "MONTPELLIER"),
    ("69003", "LYON"),
    ("75011", "PARIS"),
    ("13001", "MARSEILLE"),
    ("44000", "NANTES"),
    ("47000", "AGEN"),
    ("65000", "TARBES"),
]
# (bank code, BIC) of real French banks.
_BANKS = [
    ("30004", "BNPAFRPPXXX"),
    ("30003", "SOGEFRPPXXX"),
    ("10278", "CMCIFRPP"),
    ("12206", "AGRIFRPP822"),
    ("20041", "PSSTFRPPBOR"),
    ("16275", "CEPAFRPP627"),
]
_OBJECTS = [
    "Fournitures de bureau - mars",
    "Entretien des espaces verts",
    "Réparation toiture école élémentaire",
    "Repas cantine - février",
    "Location de matériel pour la fête",
    "Travaux de voirie rue de l'Église",
    "Subvention à l'association sportive",
    "Honoraires géomètre - bornage",
]


def luhn_complete(digits: str) -> str:
    """Append the Luhn check digit to ``digits``."""
    total = 0
    for i, ch in enumerate(reversed(digits + "0")):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def make_siret(rng: random.Random) -> str:
    """A random SIRET whose SIREN and SIRET keys are both valid (Luhn)."""
    siren = luhn_complete(f"{rng.randint(10_000_000, 99_999_999)}")
    while True:
        siret = luhn_complete(siren + f"{rng.randint(1, 999):04d}")
        if siret[-5:-1] != "0000":
            return siret


def _rib_key(bank: str, branch: str, account: str) -> str:
    table = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "12345678912345678923456789")
    acc = int(account.upper().translate(table))
    return f"{97 - ((89 * int(bank) + 15 * int(branch) + 3 * acc) % 97):02d}"


def _iban(country: str, bban: str) -> str:
    def numeric(s: str) -> str:
        return "".join(str(int(c, 36)) for c in s)

    check = 98 - int(numeric(bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


@dataclass(frozen=True)
class TiersSpec:
    """One creditor/debtor. ``kind``: "company" (CatTiers 50), "person" (01) or "public" (22)."""

    kind: str
    nom: str
    idtiers: str | None = None
    civilite: str | None = None
    prenom: str | None = None
    adr2: str = "1 place de la Mairie"
    cp: str = "40000"
    ville: str = "MONT-DE-MARSAN"
    iban: str | None = None
    bic: str | None = None
    titcpte: str | None = None
    reftiers: str | None = None


def make_tiers(rng: random.Random, n: int) -> list[TiersSpec]:
    """``n`` realistic tiers (about 2/3 companies, 1/3 natural persons)."""
    out = []
    for i in range(n):
        bank, bic = rng.choice(_BANKS)
        branch = f"{rng.randint(1, 99999):05d}"
        account = f"{rng.randint(0, 99_999_999_999):011d}"
        iban = _iban("FR", bank + branch + account + _rib_key(bank, branch, account))
        cp, ville = rng.choice(_TOWNS)
        adr2 = f"{rng.randint(1, 180)} {rng.choice(_STREETS)}"
        if i % 3 == 1:
            civ, prenom, nom = rng.choice(_PERSON_NAMES)
            out.append(
                TiersSpec(
                    kind="person",
                    nom=nom.upper(),
                    civilite=civ,
                    prenom=prenom,
                    adr2=adr2,
                    cp=cp,
                    ville=ville,
                    iban=iban,
                    bic=bic,
                    titcpte=f"{prenom} {nom}".upper()[:32],
                    reftiers=f"P{1000 + i}",
                )
            )
        else:
            nom = rng.choice(_COMPANY_NAMES)
            out.append(
                TiersSpec(
                    kind="company",
                    nom=nom.upper()[:38],
                    idtiers=make_siret(rng),
                    adr2=adr2,
                    cp=cp,
                    ville=ville,
                    iban=iban,
                    bic=bic,
                    titcpte=nom.upper()[:32],
                    reftiers=f"E{1000 + i}",
                )
            )
    return out


def _a(value: object) -> str:
    return quoteattr(str(value))


def _e(name: str, value: object) -> str:
    return f"<{name} V={_a(value)}/>"


def _money(d: Decimal) -> str:
    return f"{d:.2f}"


_FAKE_PDF = gzip.compress(b"%PDF-1.4\n% demat piece justificative de demonstration\n%%EOF\n", mtime=0)
_FAKE_PDF_B64 = base64.b64encode(_FAKE_PDF).decode("ascii")


class _PesWriter:
    """Builds the text of a PES_Aller piece by piece, so that big files can be streamed."""

    def __init__(
        self,
        *,
        siret: str,
        idpost: str,
        codcol: str,
        codbud: str,
        nomfic: str,
        pieces_per_bordereau: int,
        lines_per_piece: int,
        kind: str,
        defects: Iterable[str],
        seed: int,
        tiers: list[TiersSpec] | None = None,
        exer: int = 2026,
        libelle: str = "BUDGET PRINCIPAL",
        with_pj: bool = True,
    ) -> None:
        self.defects = set(defects)
        unknown = self.defects - DEFECTS
        if unknown:
            raise ValueError(f"défauts inconnus : {sorted(unknown)} (connus : {sorted(DEFECTS)})")
        if kind not in ("depense", "recette"):
            raise ValueError("kind doit valoir « depense » ou « recette »")
        self.rng = random.Random(seed)
        self.siret, self.idpost, self.codcol, self.codbud, self.nomfic = siret, idpost, codcol, codbud, nomfic
        self.pieces_per_bordereau = max(1, pieces_per_bordereau)
        self.lines_per_piece = max(1, lines_per_piece)
        self.kind = kind
        self.exer = exer
        self.libelle = libelle
        self.with_pj = with_pj
        self.tiers = list(tiers) if tiers else make_tiers(self.rng, 12)
        self.tiers = self._apply_tiers_defects(self.tiers)
        self.cumul = Decimal("0")
        self.next_idpce = 1
        self.pj_ids: list[str] = []
        self.demat = "infodemat_unsigned" in self.defects or "missing_mtcumul" in self.defects

    # -- tiers defects are put on the first tiers of the right kind, so every file shows them.
    def _apply_tiers_defects(self, tiers: list[TiersSpec]) -> list[TiersSpec]:
        d = self.defects
        out = list(tiers)

        def first(kind: str) -> int:
            for i, t in enumerate(out):
                if t.kind == kind:
                    return i
            out.insert(0, make_tiers(random.Random(1), 3)[0 if kind == "company" else 1])
            return 0

        if "bad_cp" in d:
            i = first("company")
            out[i] = replace(out[i], cp=out[i].cp[:4])
        if "bad_iban" in d:
            i = first("company")
            iban = out[i].iban or "FR7630004000031234567890143"
            wrong = str((int(iban[2:4]) + 1) % 97 or 2).zfill(2)
            out[i] = replace(out[i], iban=iban[:2] + wrong + iban[4:])
        if "lowercase_iban" in d:
            i = first("company")
            bank, branch, account = "30004", "00866", f"C{self.rng.randint(0, 9_999_999_999):010d}"
            iban = _iban("FR", bank + branch + account + _rib_key(bank, branch, account))
            out[i] = replace(out[i], iban=iban[:4] + iban[4:].lower())
        if "lowercase_bic" in d:
            i = first("company")
            out[i] = replace(out[i], bic=(out[i].bic or "BNPAFRPPXXX").lower())
        if "bad_siret_tiers" in d:
            i = first("company")
            s = out[i].idtiers or make_siret(self.rng)
            out[i] = replace(out[i], idtiers=s[:-1] + str((int(s[-1]) + 1) % 10))
        if "civilite_on_company" in d:
            i = first("company")
            out[i] = replace(out[i], civilite="M.")
        if "missing_civilite" in d:
            i = first("person")
            out[i] = replace(out[i], civilite=None, prenom=None)
        return out

    # -- file parts
    def header(self) -> str:
        d = self.defects
        ns = "http://example.org/pas-le-bon-espace" if "wrong_namespace" in d else NS_ALLER
        decl = '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        if "doctype" in d:
            decl += '<!DOCTYPE n:PES_Aller [<!ENTITY x "xxxxxxxxxxxxxxxx">]>\n'
        idcoll = self.siret
        if "bad_idcoll" in d:
            idcoll = idcoll[:-1] + str((int(idcoll[-1]) + 1) % 10)
        nomfic = "" if "missing_nomfic" in d else f"\n   {_e('NomFic', self.nomfic)}"
        return (
            f'{decl}<n:PES_Aller xmlns:n="{ns}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">\n'
            " <Enveloppe>\n  <Parametres>\n"
            f"   {_e('Version', 2)}\n   {_e('TypFic', 'PESALR2')}{nomfic}\n  </Parametres>\n"
            f"  <Emetteur>\n   {_e('Sigle', 'DEMAT')}\n   {_e('Adresse', 'demat 0.1')}\n  </Emetteur>\n"
            f"  <Recepteur>\n   {_e('Sigle', 'HELIOS')}\n  </Recepteur>\n </Enveloppe>\n"
            f" <EnTetePES>\n  {_e('DteStr', f'{self.exer}-03-20')}\n  {_e('IdPost', self.idpost)}\n"
            f"  {_e('IdColl', idcoll)}\n  {_e('CodCol', self.codcol)}\n  {_e('CodBud', self.codbud)}\n"
            f"  {_e('LibelleColBud', self.libelle[:38])}\n </EnTetePES>\n"
        )

    def domain_open(self) -> str:
        if self.kind == "depense":
            tag, head = "PES_DepenseAller", "EnTeteDepense"
        else:
            tag, head = "PES_RecetteAller", "EnTeteRecette"
        demat = f"\n   {_e('InfoDematerialisee', 1 if self.demat else 0)}"
        return f" <{tag}>\n  <{head}>\n   {_e('IdVer', 2)}{demat}\n  </{head}>\n"

    def domain_close(self) -> str:
        return " </PES_DepenseAller>\n" if self.kind == "depense" else " </PES_RecetteAller>\n"

    def bordereau(self, number: int) -> str:
        """Bordereau n° ``number`` (1-based): its IdBord is ``number`` unless a defect says otherwise."""
        d = self.defects
        rng = self.rng
        pieces = []
        total = Decimal("0")
        n_pieces = self.pieces_per_bordereau
        for p in range(n_pieces):
            lines = []
            for ln in range(1, self.lines_per_piece + 1):
                amount = Decimal(rng.randint(1000, 2_500_000)) / 100
                total += amount
                tiers = self.tiers[((self.next_idpce - 1) * self.lines_per_piece + ln - 1) % len(self.tiers)]
                bad_amount = "bad_amount_type" in d and number == 1 and p == 0 and ln == 1
                lines.append(self._line(ln, amount, tiers, bad_amount))
            pjref = ""
            if self.with_pj and p == 0:
                pj_id = f"{self.siret}{self.exer}DEP{number:07d}"
                self.pj_ids.append(pj_id)
                ref = pj_id if not ("pjref_dangling" in d and number == 1) else pj_id + "X"
                pjref = (
                    f"\n      <PJRef>\n       {_e('Support', '01')}\n       {_e('IdUnique', ref)}\n"
                    f"       {_e('NomPJ', f'facture-{number}.pdf')}\n      </PJRef>"
                )
            pieces.append(self._piece(self.next_idpce, pjref, lines))
            self.next_idpce += 1
        idbord = number
        if "duplicate_idbord" in d and number == 2:
            idbord = 1
        nbrpce = n_pieces
        if "nbrpce_mismatch" in d and number == 1:
            nbrpce = n_pieces + 1
        if "nbrpce_zero" in d and number == 1:
            nbrpce = 0
        mtbord = total
        if "mtbordht_mismatch" in d and number == 1:
            mtbord = total + Decimal("100.00")
        self.cumul += total
        bloc = [_e("Exer", self.exer), _e("IdBord", idbord)]
        if "wrong_order" in d and number == 1:
            bloc.reverse()
        if not ("missing_element" in d and number == 1):
            bloc.append(_e("DteBordEm", f"{self.exer}-03-{(number % 28) + 1:02d}"))
        bloc += [_e("TypBord", "01"), _e("NbrPce", nbrpce)]
        if "missing_mtcumul" not in d:
            bloc.append(_e("MtCumulAnnuel", _money(self.cumul)))
        bloc.append(_e("MtBordHT" if self.kind == "depense" else "MtBordHt", _money(mtbord)))
        head = "\n    ".join(bloc)
        return (
            f'  <Bordereau Id="BORD{number}">\n   <BlocBordereau>\n    {head}\n   </BlocBordereau>\n'
            + "".join(pieces)
            + "  </Bordereau>\n"
        )

    def _piece(self, idpce: int, pjref: str, lines: list[str]) -> str:
        obj = self.rng.choice(_OBJECTS)
        if self.kind == "depense":
            bloc = (
                f"    <BlocPiece>\n     <InfoPce>\n      {_e('IdPce', idpce)}\n      {_e('TypPce', '01')}\n"
                f"      {_e('NatPce', '01')}\n      {_e('Obj', obj)}{pjref}\n     </InfoPce>\n    </BlocPiece>\n"
            )
        else:
            bloc = (
                f"    <BlocPiece>\n      {_e('IdPce', idpce)}\n      {_e('TypPce', '01')}\n"
                f"      {_e('NatPce', '01')}\n      {_e('ObjPce', obj)}{pjref}\n    </BlocPiece>\n"
            )
        return "   <Piece>\n" + bloc + "".join(lines) + "   </Piece>\n"

    def _line(self, ln: int, amount: Decimal, t: TiersSpec, bad_amount: bool) -> str:
        mt = _money(amount).replace(".", ",") if bad_amount else _money(amount)
        if self.kind == "depense":
            info = (
                f"      <InfoLignePce>\n       {_e('IdLigne', ln)}\n       {_e('Nature', '6068')}\n"
                f"       {_e('Fonction', '020')}\n       {_e('LibVir1', 'FACTURE ' + str(self.next_idpce))}\n"
                f"       {_e('ModRegl', '03' if t.iban else '02')}\n       {_e('TVAIntraCom', 0)}\n"
                f"       {_e('MtHT', mt)}\n      </InfoLignePce>\n"
            )
            bloc = f"     <BlocLignePiece>\n{info}     </BlocLignePiece>\n"
        else:
            info = (
                f"      <InfoLignePiece>\n       {_e('IdLigne', ln)}\n       {_e('CodProdLoc', 'R70')}\n"
                f"       {_e('Nature', '7067')}\n       {_e('Majo', 0)}\n       {_e('TvaIntraCom', 0)}\n"
                f"       {_e('MtHT', mt)}\n      </InfoLignePiece>\n"
            )
            bloc = f"     <BlocLignePiece>\n{info}     </BlocLignePiece>\n"
        return "    <LigneDePiece>\n" + bloc + self._tiers(t) + "    </LigneDePiece>\n"

    def _tiers(self, t: TiersSpec) -> str:
        if t.kind == "person":
            cat, nat = "01", "01"
        elif t.kind == "public":
            cat, nat = "22", "09"
        else:
            cat, nat = "50", "03"
        info = []
        if t.idtiers:
            info += [_e("IdTiers", t.idtiers), _e("NatIdTiers", "01")]
        if t.reftiers:
            info.append(_e("RefTiers", t.reftiers))
        info += [_e("CatTiers", cat), _e("NatJur", nat)]
        if self.kind == "recette":
            info.append(_e("TypTiers", "01"))
        if t.civilite:
            info.append(_e("Civilite", t.civilite))
        info.append(_e("Nom", t.nom[:38]))
        if t.prenom:
            info.append(_e("Prenom", t.prenom))
        sep = "\n       "
        out = f"     <Tiers>\n      <InfoTiers>{sep}{sep.join(info)}\n      </InfoTiers>\n"
        out += (
            f"      <Adresse>{sep}{_e('TypAdr', 1)}{sep}{_e('Adr2', t.adr2[:38])}{sep}{_e('CP', t.cp)}"
            f"{sep}{_e('Ville', t.ville)}{sep}{_e('CodRes', 0)}\n      </Adresse>\n"
        )
        if t.iban:
            bank = [_e("BIC", t.bic)] if t.bic else []
            bank += [_e("IBAN", t.iban), _e("TitCpte", (t.titcpte or t.nom)[:32])]
            out += f"      <CpteBancaire>{sep}{sep.join(bank)}\n      </CpteBancaire>\n"
        return out + "     </Tiers>\n"

    def footer(self) -> str:
        out = ""
        if self.pj_ids:
            pjs = []
            ids = list(self.pj_ids)
            if "duplicate_pj" in self.defects and len(ids) >= 1:
                ids.append(ids[0])
            for i, pj_id in enumerate(ids, start=1):
                pjs.append(
                    f'  <PJ>\n   <Contenu>\n    <Fichier MIMEType="application/pdf">{_FAKE_PDF_B64}</Fichier>\n'
                    f"   </Contenu>\n   {_e('IdUnique', pj_id)}\n   {_e('NomPJ', f'facture-{i}.pdf')}\n"
                    f"   {_e('TypePJ', '003')}\n   {_e('Description', f'Facture du bordereau {i} (pièce justificative)')}\n"
                    "  </PJ>\n"
                )
            out += f" <PES_PJ>\n  <EnTetePES_PJ>\n   {_e('IdVer', 1)}\n  </EnTetePES_PJ>\n" + "".join(pjs) + " </PES_PJ>\n"
        return out + "</n:PES_Aller>\n"

    def encode(self, text: str) -> bytes:
        if "utf8_declared_latin1" in self.defects:
            return text.encode("utf-8")
        return text.encode("iso-8859-1")


def generate_pes(
    *,
    siret: str,
    idpost: str,
    codcol: str,
    codbud: str,
    nomfic: str,
    n_bordereaux: int = 1,
    pieces_per_bordereau: int = 2,
    lines_per_piece: int = 1,
    kind: str = "depense",
    defects: Iterable[str] = (),
    seed: int = 0,
    tiers: list[TiersSpec] | None = None,
    exer: int = 2026,
    libelle: str = "BUDGET PRINCIPAL",
    with_pj: bool = True,
) -> bytes:
    """A whole PES_Aller in memory (ISO-8859-1). See DEFECTS for the faults one can ask for."""
    defects = set(defects)
    if "duplicate_idbord" in defects:
        n_bordereaux = max(n_bordereaux, 2)
    w = _PesWriter(siret=siret, idpost=idpost, codcol=codcol, codbud=codbud, nomfic=nomfic,
                   pieces_per_bordereau=pieces_per_bordereau, lines_per_piece=lines_per_piece, kind=kind,
                   defects=defects, seed=seed, tiers=tiers, exer=exer, libelle=libelle, with_pj=with_pj)
    parts = [w.header(), w.domain_open()]
    parts += [w.bordereau(i) for i in range(1, max(1, n_bordereaux) + 1)]
    parts += [w.domain_close(), w.footer()]
    return w.encode("".join(parts))


def _iter_big(w: _PesWriter, target_bytes: int, max_pj: int) -> Iterator[bytes]:
    written = 0
    for part in (w.header(), w.domain_open()):
        data = w.encode(part)
        written += len(data)
        yield data
    number = 0
    batch: list[str] = []
    while written < target_bytes - 4096:
        number += 1
        if number > max_pj:
            w.with_pj = False
        text = w.bordereau(number)
        batch.append(text)
        written += len(text)  # ISO-8859-1: one byte per character
        if len(batch) >= 64:
            yield w.encode("".join(batch))
            batch = []
    if batch:
        yield w.encode("".join(batch))
    yield w.encode(w.domain_close() + w.footer())


def generate_pes_file(
    path: str | Path,
    target_bytes: int,
    *,
    siret: str = "21400293300015",
    idpost: str = "040012",
    codcol: str = "293",
    codbud: str = "01",
    nomfic: str = "PES_BENCH",
    pieces_per_bordereau: int = 50,
    lines_per_piece: int = 2,
    kind: str = "depense",
    defects: Iterable[str] = (),
    seed: int = 0,
    max_pj: int = 10,
) -> int:
    """Stream a PES_Aller of about ``target_bytes`` to ``path``; return its size in bytes."""
    w = _PesWriter(siret=siret, idpost=idpost, codcol=codcol, codbud=codbud, nomfic=nomfic,
                   pieces_per_bordereau=pieces_per_bordereau, lines_per_piece=lines_per_piece, kind=kind,
                   defects=defects, seed=seed, with_pj=max_pj > 0)
    size = 0
    with Path(path).open("wb") as fh:
        for data in _iter_big(w, target_bytes, max_pj):
            fh.write(data)
            size += len(data)
    return size


# ----------------------------------------------------------------------------- PES_Marche / PES_Facture
# Written as editors write them (DGFiP PES V2 v5.30 structure), valid against the official schema;
# used by the tests that prove the project XSD controls these blocks (issue 15).


def marche_block(*, siret: str, idcontrat: str = "2025MAR0001", montant: str = "125000.00",
                 nature: str = "01", procedure: str = "01", cpv: str = "45233140-2") -> str:
    """A PES_Marche with one marché (the blocks a notification carries)."""
    return (
        " <PES_Marche>\n"
        f"  <EnTeteMarche>{_e('IdVer', 1)}</EnTeteMarche>\n"
        "  <Marches>\n   <Marche>\n"
        "    <IdentifiantMarche>"
        f"{_e('IdContrat', idcontrat)}{_e('NumeroOrdreModification', '00')}{_e('SequenceEnvoi', 1)}"
        f"{_e('CaractereCorrectifEnregistrement', 'false')}</IdentifiantMarche>\n"
        f"    {_e('URLProfilAcheteur', 'https://marches.example.fr/profil')}\n"
        f"    <Acheteurs><Acheteur>{_e('IdAcheteur', siret)}{_e('NomAcheteur', 'COMMUNE DE DEMAT')}</Acheteur></Acheteurs>\n"
        f"    {_e('NatureMarche', nature)}\n"
        f"    {_e('Objet', 'Travaux de voirie rue des Ecoles')}\n"
        f"    {_e('CodeCPV', cpv)}\n"
        f"    {_e('ProcedureMarche', procedure)}\n"
        f"    <LieuExecution>{_e('CodeLieuExecution', '40293')}{_e('TypeCode', '01')}"
        f"{_e('NomLieuExecution', 'Saint-Sever')}</LieuExecution>\n"
        f"    {_e('DureeEnMois', 6)}\n"
        f"    {_e('MontantHTNotifie', montant)}\n"
        f"    {_e('CaractereEstimatifMontantNotifie', 'false')}\n"
        f"    {_e('Reconductibilite', '01')}\n"
        f"    {_e('Penalite', 'true')}\n"
        f"    {_e('DateNotification', '2025-03-01')}\n"
        f"    <ConditionsExecution>{_e('ModaliteExecution', '01')}{_e('MultiBudget', 'false')}</ConditionsExecution>\n"
        "   </Marche>\n  </Marches>\n"
        " </PES_Marche>\n"
    )


def facture_block(*, annee: int = 2025, numero: str = "F2025-0001", montant: str = "100.00") -> str:
    """A PES_Facture (ASAP) with one individual invoice."""
    tiers = (f"<InfoTiers>{_e('CatTiers', '01')}{_e('NatJur', '01')}{_e('TypTiers', '01')}"
             f"{_e('Nom', 'DUPONT')}{_e('Prenom', 'JEAN')}</InfoTiers>")
    return (
        " <PES_Facture>\n"
        f"  {_e('IdVer', 1)}\n  {_e('Annee', annee)}\n  {_e('Date', f'{annee}-03-15')}\n"
        f"  <Emetteur><InfoTiers>{_e('CatTiers', '50')}{_e('NatJur', '03')}{_e('TypTiers', '01')}"
        f"{_e('Nom', 'COMMUNE DE DEMAT')}</InfoTiers></Emetteur>\n"
        "  <FactureIndiv>\n"
        f"   {_e('DateEmission', f'{annee}-03-15')}\n   {_e('NumeroFacture', numero)}\n"
        f"   <Debiteur>{tiers}</Debiteur>\n"
        f"   {_e('Objet', 'Cantine scolaire mars')}\n"
        f"   <LigneFacture>{_e('Date', f'{annee}-03-10')}{_e('Libelle', 'Repas')}{_e('MtBase', montant)}"
        f"{_e('MtHT', montant)}{_e('TauxTVA', '0.00')}{_e('MtTVA', '0.00')}{_e('MtTTC', montant)}"
        f"{_e('Ordre', 1)}</LigneFacture>\n"
        f"   <TotalAPayer>{_e('MtTotalHT', montant)}{_e('MtTotalTVA', '0.00')}{_e('MtTotalTTC', montant)}</TotalAPayer>\n"
        f"   {_e('ModalitesReglement', 'Paiement a reception au Tresor public')}\n"
        f"   {_e('ConditionsGen', 'Conditions generales de la collectivite')}\n"
        "  </FactureIndiv>\n"
        "  <Nomenclatures/>\n"
        " </PES_Facture>\n"
    )


def with_blocks(pes: bytes, *, marche: str | None = None, facture: str | None = None,
                keep_domains: bool = True) -> bytes:
    """Insert PES_Facture / PES_Marche blocks into a generated PES (where the schema puts them:
    after the dépense/recette domains, before PES_PJ); keep_domains=False leaves only them."""
    text = pes.decode("iso-8859-1")
    if not keep_domains:
        for dom in ("PES_DepenseAller", "PES_RecetteAller"):
            start = text.find(f"<{dom}>")
            if start >= 0:
                end = text.index(f"</{dom}>", start) + len(f"</{dom}>")
                text = text[:start] + text[end:]
    extra = (facture or "") + (marche or "")
    anchor = text.find("<PES_PJ>")
    if anchor < 0:
        anchor = text.index("</n:PES_Aller>")
    else:
        anchor = text.rfind("\n", 0, anchor) + 1
    return (text[:anchor] + extra + text[anchor:]).encode("iso-8859-1")
