"""A PES_Retour from Hélios joins the dossiers whose PES_Aller carried the bordereaux it names."""

from __future__ import annotations

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.helios.generate import generate_pes
from flows.pipeline import collect, steps

NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour"


def _retour(siret: str, bordereaux: list[tuple[str, str]], nomfic: str = "RETOUR_TEST_01") -> bytes:
    """A PES_Retour (dépense) naming `bordereaux` as (exercice, IdBord), shaped like Hélios' own."""
    blocks = "".join(
        f"<Bordereau><BlocBordereau><Exer V=\"{exer}\"/><IdBord V=\"{idbord}\"/><TypBord V=\"01\"/></BlocBordereau>"
        f"<Piece><InfoPiece><IdPce V=\"1\"/><TypPce V=\"01\"/><NatPce V=\"01\"/><Obj V=\"Mandat payé\"/>"
        f"<EtatPce V=\"04\"/></InfoPiece></Piece></Bordereau>"
        for exer, idbord in bordereaux)
    return (f'<?xml version="1.0" encoding="ISO-8859-1"?><n:PES_Retour xmlns:n="{NS}"><Enveloppe><Parametres>'
            f'<Version V="2"/><TypFic V="PESRETOUR_DEP"/><NomFic V="{nomfic}"/></Parametres></Enveloppe>'
            f'<EnTetePES><DteStr V="2026-11-25"/><IdPost V="040012"/><IdColl V="{siret}"/><CodColl V="293"/>'
            f'<CodBud V="01"/></EnTetePES><PES_DepenseRetour><EnTeteDepense><TypRestit V="AA"/><IdVer V="2"/>'
            f'<NatInf V="2"/></EnTeteDepense>{blocks}</PES_DepenseRetour></n:PES_Retour>').encode("iso-8859-1")


def _transmitted_pes(settings, nomfic: str, seed: int, first_idbord: int = 1) -> str:
    coll = settings.config.collectivite("saint-sever")
    data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                        codbud=coll.helios.codbud, nomfic=nomfic, n_bordereaux=2, seed=seed)
    for n in (2, 1):  # a later file of the year numbers its bordereaux on from the earlier ones
        data = data.replace(f'<IdBord V="{n}"/>'.encode(), f'<IdBord V="{first_idbord + n - 1}"/>'.encode())
    sha = ArtefactStore(settings.store_root).put(data)
    with session_scope(settings.database_url) as s:
        dossier_id = service.create(s, collectivite=coll.slug, flow="helios", original_name=f"{nomfic}.xml",
                                    sha256=sha, size=len(data)).id
    assert steps.validate(settings, dossier_id).state == "valide"
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id, for_update=True)
        for target in ("au_parapheur", "signe", "transmis"):
            service.transition(s, d, target, message=target)
    return dossier_id


def test_pes_retour_is_attached_to_the_dossier_of_its_bordereaux(demo_settings):
    settings = demo_settings
    first = _transmitted_pes(settings, "PES_RET_A", seed=1)
    other = _transmitted_pes(settings, "PES_RET_B", seed=2, first_idbord=3)
    with session_scope(settings.database_url) as s:
        ids = service.get(s, first).extra["bordereaux"]
        assert len(ids) == 2 and all(":" in i for i in ids)  # exercice:IdBord, recorded at validation
        others = set(service.get(s, other).extra["bordereaux"])
    named = [tuple(i.split(":")) for i in ids if i not in others][:1]
    assert named, "the generator gave both files the same bordereaux"
    siret = settings.config.collectivite("saint-sever").siret
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        matched = collect._handle_dgfip(s, store, "PES_RETOUR_1.xml", _retour(siret, named))
    assert matched == [first]
    with session_scope(settings.database_url) as s:
        d = service.get(s, first)
        assert service.artefact(d, "pes_retour").name == "PES_RETOUR_1.xml"
        note = next(e for e in d.journal if e.event == "PES_Retour")
        assert note.actor == "DGFiP" and f"{named[0][0]}:{named[0][1]}" in note.message and "1 pièce(s)" in note.message
        assert service.artefact(service.get(s, other), "pes_retour") is None
    # another collectivité's SIRET, or bordereaux nobody sent: not matched, nothing attached
    with session_scope(settings.database_url) as s:
        assert collect._handle_dgfip(s, store, "PES_RETOUR_2.xml", _retour("20003061700019", named)) == []
        assert collect._handle_dgfip(s, store, "PES_RETOUR_3.xml", _retour(siret, [("1999", "99999")])) == []


def test_acquit_out_of_schema_is_applied_and_said(demo_settings):
    """An acquit that departs from the PES_ACQUIT schema is still the State's answer: applied, but the
    dossier's journal says where it departs; a conforming acquit adds no such note."""
    from flows.helios.acquit import build_acquit

    settings = demo_settings
    store = ArtefactStore(settings.store_root)
    good, odd = _transmitted_pes(settings, "PES_ACQ_A", seed=3), _transmitted_pes(settings, "PES_ACQ_B", seed=4)
    acquits = {}
    for dossier_id in (good, odd):
        with session_scope(settings.database_url) as s:
            acquits[dossier_id] = build_acquit(store.get(service.get(s, dossier_id).sha256), [])
    acquits[odd] = acquits[odd].replace(b"</n:PES_ACQUIT>", b"<Invente V=\"1\"/></n:PES_ACQUIT>")
    assert b"<Invente" in acquits[odd]
    for dossier_id, data in acquits.items():
        with session_scope(settings.database_url) as s:
            assert collect._handle_dgfip(s, store, f"ACQUIT_{dossier_id}.xml", data) == [dossier_id]
    with session_scope(settings.database_url) as s:
        for dossier_id in (good, odd):
            assert service.get(s, dossier_id).state == "acquitte"
        notes = [e for e in service.get(s, odd).journal if e.event == "acquit_non_conforme"]
        assert len(notes) == 1 and "Invente" in notes[0].message and "schéma PES_ACQUIT" in notes[0].message
        assert not [e for e in service.get(s, good).journal if e.event == "acquit_non_conforme"]
