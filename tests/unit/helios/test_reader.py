"""The streaming reader: what it yields, and that it does not keep the tree."""

from __future__ import annotations

import pytest
from lxml import etree

from flows import xmlsafe
from flows.helios.reader import (
    CONTAINER_TAGS,
    PJ,
    Bordereau,
    BordereauEnd,
    BordereauHead,
    Domaine,
    Header,
    PesStreamReader,
    Piece,
    iter_pes,
    read_bordereaux,
)

from .conftest import COLL, make_pes, write


def test_items_in_document_order(tmp_path):
    path = write(tmp_path, make_pes(n_bordereaux=2, pieces_per_bordereau=3, lines_per_piece=2))
    items = list(iter_pes(path))
    kinds = [type(i).__name__ for i in items]
    assert kinds == (
        ["Header", "Domaine"]
        + (["BordereauHead"] + ["Piece"] * 3 + ["BordereauEnd"]) * 2
        + ["PJ", "PJ"]
    )
    header = items[0]
    assert isinstance(header, Header)
    assert header.nomfic == "PES_TEST_0001" and header.idcoll == COLL["siret"]
    assert (header.idpost, header.codcol, header.codbud) == (COLL["idpost"], COLL["codcol"], COLL["codbud"])
    assert header.root_tag.endswith("}PES_Aller") and header.typfic == "PESALR2" and header.version == "2"
    dom = items[1]
    assert isinstance(dom, Domaine) and dom.domain == "depense" and dom.info_dematerialisee == "0"


def test_bordereau_piece_ligne_tiers_values(tmp_path):
    path = write(tmp_path, make_pes(n_bordereaux=1, pieces_per_bordereau=2, lines_per_piece=2))
    items = list(iter_pes(path))
    head = next(i for i in items if isinstance(i, BordereauHead))
    pieces = [i for i in items if isinstance(i, Piece)]
    end = next(i for i in items if isinstance(i, BordereauEnd))
    assert (head.idbord, head.exer, head.typbord, head.nbrpce, head.id_attr) == ("1", "2026", "01", "2", "BORD1")
    assert end.pieces == 2 and end.signed is False
    total = sum(float(ln.mtht) for p in pieces for ln in p.lignes)
    assert abs(total - float(head.mtbordht)) < 0.001
    p1 = pieces[0]
    assert p1.idpce == "1" and p1.typpce == "01" and p1.natpce == "01" and p1.obj
    assert p1.pjrefs == [("01", f"{COLL['siret']}2026DEP0000001")]
    assert [ln.idligne for ln in p1.lignes] == ["1", "2"]
    tiers = [t for p in pieces for ln in p.lignes for t in ln.tiers]
    assert len(tiers) == 4
    company = next(t for t in tiers if t.cattiers == "50")
    person = next(t for t in tiers if t.cattiers == "01")
    assert company.idtiers and company.natidtiers == "01" and company.civilite is None
    assert person.civilite in ("M.", "Mme") and person.prenom
    assert all(t.has_bank and t.iban and t.bic and t.cp and len(t.cp) == 5 for t in tiers)
    pjs = [i for i in items if isinstance(i, PJ)]
    assert pjs[0].idunique == f"{COLL['siret']}2026DEP0000001" and pjs[0].mimetype == "application/pdf"


def test_recette_reader(tmp_path):
    path = write(tmp_path, make_pes(kind="recette", n_bordereaux=1, pieces_per_bordereau=1))
    items = list(iter_pes(path))
    dom = next(i for i in items if isinstance(i, Domaine))
    head = next(i for i in items if isinstance(i, BordereauHead))
    piece = next(i for i in items if isinstance(i, Piece))
    assert dom.domain == "recette" and head.domain == "recette" and head.mtbordht  # MtBordHt in recette
    assert piece.obj and piece.lignes[0].mtht and piece.lignes[0].tiers[0].typtiers == "01"


def test_signature_presence_per_bordereau(tmp_path):
    data = make_pes(n_bordereaux=3).replace(
        b'  </Bordereau>\n  <Bordereau Id="BORD3">',
        b'  <ds:Signature Id="S2"><ds:SignedInfo/></ds:Signature>\n  </Bordereau>\n  <Bordereau Id="BORD3">',
    )
    ends = [i for i in iter_pes(write(tmp_path, data)) if isinstance(i, BordereauEnd)]
    assert [e.signed for e in ends] == [False, True, False]


def test_read_bordereaux_groups_pieces(tmp_path):
    path = write(tmp_path, make_pes(n_bordereaux=2, pieces_per_bordereau=3))
    bords = [b for b in read_bordereaux(path) if isinstance(b, Bordereau)]
    assert [len(b.pieces) for b in bords] == [3, 3]
    assert [b.head.idbord for b in bords] == ["1", "2"]


def test_real_signed_sample(samples):
    items = list(iter_pes(samples / "PESALR2_49101169800000_171227_2045.xml"))
    end = next(i for i in items if isinstance(i, BordereauEnd))
    head = next(i for i in items if isinstance(i, Header))
    assert end.signed is True and head.idcoll == "12345678912345"
    assert len([i for i in items if isinstance(i, PJ)]) == 2  # one in PES_PJ, one misplaced


def _peak_live_elements(path) -> tuple[int, int]:
    reader = PesStreamReader()
    peak = 0
    root = None
    for _ev, el in xmlsafe.iterparse(path, events=("end",), tag=CONTAINER_TAGS):
        if root is None:
            root = el.getroottree().getroot()
        list(reader.handle(el))
        peak = max(peak, sum(1 for _ in root.iter()))
    return peak, reader.bordereau_count


def test_memory_stays_flat(tmp_path):
    """While streaming, the number of live elements does not grow with the file.

    (lxml parses a chunk ahead of the events it hands out: the bound is that chunk, ~1000
    elements here, whatever the number of bordereaux.)"""
    small = write(tmp_path, make_pes(n_bordereaux=5, pieces_per_bordereau=20, lines_per_piece=2), "small.xml")
    big = write(tmp_path, make_pes(n_bordereaux=60, pieces_per_bordereau=20, lines_per_piece=2), "big.xml")
    peak_small, n_small = _peak_live_elements(small)
    peak_big, n_big = _peak_live_elements(big)
    assert (n_small, n_big) == (5, 60)
    # 60 bordereaux = 1200 pièces = ~110 000 elements: the tree never holds more than a chunk
    assert peak_big < 3000, peak_big
    assert peak_big <= peak_small * 1.5, (peak_small, peak_big)


def test_malformed_raises(tmp_path):
    data = make_pes()
    with pytest.raises(etree.XMLSyntaxError):
        list(iter_pes(write(tmp_path, data[:3000])))


def test_doctype_refused(tmp_path):
    with pytest.raises(xmlsafe.UnsafeXML):
        list(iter_pes(write(tmp_path, make_pes(defects=["doctype"]))))
