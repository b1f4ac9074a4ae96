"""The project XSD (schemas/pes/PES_Aller.xsd) gives the same verdict as the official DGFiP one.

Checked on every real PES_Aller sample of ../shared/reference/helios/samples and on generated
files, valid and broken (missing mandatory element, bad value type, wrong order, wrong root
namespace, ...). Known, deliberate differences (blocks the project does not read are accepted
without control) are tested at the end so that they stay known.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from lxml import etree

from flows.helios.validate import project_schema

from .conftest import make_pes, parse

PES_ALLER_SAMPLES = {
    # sample -> verdict of the official schema (see reference/helios/schemas/MANIFEST.md)
    "PES_ex.xml": True,
    "HELIOS_SIMU_ALR2_1496987735_826268894.xml": True,
    "PESALR2_49101169800000_171227_2045.xml": False,  # PJ directly under PES_Aller, PJ incomplete
    "SHA256_bordereau.xml": False,  # PJ directly under PES_Aller
}


def verdicts(official: etree.XMLSchema, data: bytes) -> tuple[bool, bool, list[str], list[str]]:
    doc = parse(data)
    mine = project_schema()
    a = official.validate(doc)
    b = mine.validate(doc)
    return a, b, [e.message for e in official.error_log], [e.message for e in mine.error_log]


@pytest.mark.parametrize("name", sorted(PES_ALLER_SAMPLES))
def test_real_samples_same_verdict(official_aller, samples, name):
    data = (samples / name).read_bytes()
    a, b, oerr, merr = verdicts(official_aller, data)
    assert a is PES_ALLER_SAMPLES[name], oerr
    assert b is a, f"officiel={a} projet={b}\nofficiel: {oerr[:3]}\nprojet: {merr[:3]}"


def _sub(pattern: str, repl: str, count: int = 1) -> Callable[[str], str]:
    def f(text: str) -> str:
        new, n = re.subn(pattern, repl, text, count=count)
        assert n, f"mutation sans effet : {pattern}"
        return new

    return f


def _swap(first: str, second: str) -> Callable[[str], str]:
    """Swap the first <first .../> and the <second .../> that follows it."""

    def f(text: str) -> str:
        m = re.search(rf"(<{first} V=\"[^\"]*\"/>)(\s*)(<{second} V=\"[^\"]*\"/>)", text)
        assert m, (first, second)
        return text[: m.start()] + m.group(3) + m.group(2) + m.group(1) + text[m.end() :]

    return f


def _insert_after(pattern: str, snippet: str) -> Callable[[str], str]:
    def f(text: str) -> str:
        m = re.search(pattern, text)
        assert m, pattern
        return text[: m.end()] + snippet + text[m.end() :]

    return f


# name -> (mutation, expected verdict of both schemas, kinds it applies to)
MUTATIONS: dict[str, tuple[Callable[[str], str], bool, tuple[str, ...]]] = {
    "valide": (lambda t: t, True, ("depense", "recette")),
    "sans NomFic": (_sub(r"\s*<NomFic V=\"[^\"]*\"/>", ""), False, ("depense", "recette")),
    "sans Nom du tiers": (_sub(r"\s*<Nom V=\"[^\"]*\"/>", ""), False, ("depense", "recette")),
    "sans IdBord": (_sub(r"\s*<IdBord V=\"[^\"]*\"/>", ""), False, ("depense", "recette")),
    "sans MtHT": (_sub(r"\s*<MtHT V=\"[^\"]*\"/>", ""), False, ("depense", "recette")),
    "sans Adr2": (_sub(r"\s*<Adr2 V=\"[^\"]*\"/>", ""), False, ("depense", "recette")),
    "sans TypTiers (recette)": (_sub(r"\s*<TypTiers V=\"[^\"]*\"/>", ""), False, ("recette",)),
    "sans attribut V": (_sub(r"<IdPce V=\"[^\"]*\"/>", "<IdPce/>"), False, ("depense", "recette")),
    "Exer non numérique": (_sub(r"<Exer V=\"2026\"/>", '<Exer V="20X6"/>'), False, ("depense", "recette")),
    "date impossible": (_sub(r"<DteStr V=\"[^\"]*\"/>", '<DteStr V="2026-02-30"/>'), False, ("depense", "recette")),
    "montant à virgule": (_sub(r"<MtHT V=\"(\d+)\.(\d+)\"/>", r'<MtHT V="\1,\2"/>'), False, ("depense", "recette")),
    "montant à 3 décimales": (_sub(r"<MtHT V=\"(\d+)\.(\d+)\"/>", r'<MtHT V="\1.\g<2>5"/>'), False, ("depense", "recette")),
    "montant négatif": (_sub(r"<MtHT V=\"(\d+)\.(\d+)\"/>", r'<MtHT V="-\1.\2"/>'), False, ("depense", "recette")),
    "NbrPce nul": (_sub(r"<NbrPce V=\"\d+\"/>", '<NbrPce V="0"/>'), False, ("depense", "recette")),
    "TypBord inconnu": (_sub(r"<TypBord V=\"01\"/>", '<TypBord V="09"/>'), False, ("depense", "recette")),
    "TypBord 06 en dépense": (_sub(r"<TypBord V=\"01\"/>", '<TypBord V="06"/>'), False, ("depense",)),
    "TypBord 06 en recette": (_sub(r"<TypBord V=\"01\"/>", '<TypBord V="06"/>'), True, ("recette",)),
    "CatTiers inconnue": (_sub(r"<CatTiers V=\"50\"/>", '<CatTiers V="51"/>'), False, ("depense", "recette")),
    "InfoDematerialisee 2": (_sub(r"<InfoDematerialisee V=\"0\"/>", '<InfoDematerialisee V="2"/>'), False, ("depense",)),
    "Version 0": (_sub(r"<Version V=\"2\"/>", '<Version V="0"/>'), False, ("depense",)),
    "IdColl sur 15 chiffres": (_sub(r"<IdColl V=\"(\d+)\"/>", r'<IdColl V="\g<1>1"/>'), False, ("depense",)),
    "IdColl vide (accepté par le PES)": (_sub(r"<IdColl V=\"(\d+)\"/>", '<IdColl V=""/>'), True, ("depense",)),
    "CodCol 000": (_sub(r"<CodCol V=\"\d+\"/>", '<CodCol V="000"/>'), False, ("depense",)),
    "CodBud sur 1 caractère": (_sub(r"<CodBud V=\"\d+\"/>", '<CodBud V="1"/>'), False, ("depense",)),
    "IdPost 000000": (_sub(r"<IdPost V=\"\d+\"/>", '<IdPost V="000000"/>'), False, ("depense",)),
    "IdPost corse": (_sub(r"<IdPost V=\"\d+\"/>", '<IdPost V="02A123"/>'), True, ("depense",)),
    "Nom vide": (_sub(r"<Nom V=\"[^\"]*\"/>", '<Nom V=""/>'), False, ("depense",)),
    "Nom « nc »": (_sub(r"<Nom V=\"[^\"]*\"/>", '<Nom V="nc"/>'), False, ("depense",)),
    "Nom « . »": (_sub(r"<Nom V=\"[^\"]*\"/>", '<Nom V="."/>'), False, ("depense",)),
    "Nom de 39 caractères": (_sub(r"<Nom V=\"[^\"]*\"/>", '<Nom V="' + "É" * 39 + '"/>'), False, ("depense",)),
    "Nom de 38 caractères": (_sub(r"<Nom V=\"[^\"]*\"/>", '<Nom V="' + "É" * 38 + '"/>'), True, ("depense",)),
    "CP à lettres": (_sub(r"<CP V=\"\d+\"/>", '<CP V="4OOOO"/>'), False, ("depense",)),
    "CP sur 4 chiffres (accepté par le PES)": (_sub(r"<CP V=\"(\d{4})\d\"/>", r'<CP V="\1"/>'), True, ("depense",)),
    "BIC en minuscules": (_sub(r"<BIC V=\"([A-Z0-9]+)\"/>", lambda m: f'<BIC V="{m.group(1).lower()}"/>'), False, ("depense",)),
    "IBAN minuscule après la clé (accepté)": (
        _sub(r"<IBAN V=\"(FR\d\d)([A-Z0-9]+)\"/>", lambda m: f'<IBAN V="{m.group(1)}{m.group(2).lower()}"/>'),
        True,
        ("depense",),
    ),
    "IBAN sans pays": (_sub(r"<IBAN V=\"FR", '<IBAN V="'), False, ("depense",)),
    "ordre IdBord/Exer inversé": (_swap("Exer", "IdBord"), False, ("depense", "recette")),
    "ordre CP/Ville inversé": (_swap("CP", "Ville"), False, ("depense", "recette")),
    "ordre CatTiers/NatJur inversé": (_swap("CatTiers", "NatJur"), False, ("depense", "recette")),
    "élément inconnu": (_insert_after(r"<InfoPce>", '<Inconnu V="1"/>'), False, ("depense",)),
    "racine dans un autre espace de noms": (
        _sub(r"pes_v2/Rev0/aller\"", 'pes_v2/Rev0/allerX"'),
        False,
        ("depense",),
    ),
    "Bordereau Id en double": (_sub(r"Bordereau Id=\"BORD2\"", 'Bordereau Id="BORD1"'), False, ("depense",)),
    "PJ sans MIMEType": (_sub(r"<Fichier MIMEType=\"application/pdf\">", "<Fichier>"), False, ("depense",)),
    "NomPJ sans extension": (_sub(r"<NomPJ V=\"facture-1.pdf\"/>\s*<TypePJ", '<NomPJ V="facture-1"/><TypePJ'), False, ("depense",)),
    "PJ directement sous PES_Aller": (
        _sub(r"</PES_PJ>\n", "</PES_PJ>\n <PJ><Contenu><Fichier MIMEType=\"application/pdf\">QUJD</Fichier></Contenu></PJ>\n"),
        False,
        ("depense",),
    ),
    "PES_PJ sans EnTetePES_PJ": (_sub(r"<EnTetePES_PJ>\s*<IdVer V=\"1\"/>\s*</EnTetePES_PJ>", ""), False, ("depense",)),
    "bloc DGP complet": (
        _insert_after(
            r"</InfoPce>",
            '<DGP><Dgp V="0"/><DteDebDgp V="2026-03-01"/><DteFinDgp V="2026-03-31"/><DureeDgp V="30"/><TxIntMor V="7.05"/></DGP>',
        ),
        True,
        ("depense",),
    ),
    "bloc DGP incomplet": (_insert_after(r"</InfoPce>", '<DGP><Dgp V="0"/></DGP>'), False, ("depense",)),
    "LiensIdent": (_insert_after(r"</InfoLignePce>", '<LiensIdent><IdMarche V="2026-0042"/></LiensIdent>'), True, ("depense",)),
    "RIB français": (
        _sub(
            r"<BIC V=\"[^\"]*\"/>\s*<IBAN V=\"[^\"]*\"/>",
            '<CodeEtab V="30001"/><CodeGuic V="00866"/><IdCpte V="C7850000000"/><CleRib V="67"/>',
        ),
        True,
        ("depense",),
    ),
    "RIB et IBAN mêlés": (
        _sub(r"<BIC V=\"[^\"]*\"/>", '<CodeEtab V="30001"/><CodeGuic V="00866"/><IdCpte V="C7850000000"/><CleRib V="67"/>'),
        False,
        ("depense",),
    ),
}


CASES = [(name, kind) for name, (_m, _e, kinds) in MUTATIONS.items() for kind in kinds]


@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{k}-{n}" for n, k in CASES])
def test_generated_files_same_verdict(official_aller, name, kind):
    mutate, expected, _kinds = MUTATIONS[name]
    base = make_pes(kind=kind, n_bordereaux=2, pieces_per_bordereau=2, lines_per_piece=1).decode("iso-8859-1")
    data = mutate(base).encode("iso-8859-1")
    a, b, oerr, merr = verdicts(official_aller, data)
    assert a is expected, f"le schéma officiel donne {a} : {oerr[:3]}"
    assert b is a, f"officiel={a} projet={b}\nofficiel: {oerr[:3]}\nprojet: {merr[:3]}"


@pytest.mark.parametrize(
    "defect",
    ["missing_nomfic", "missing_element", "bad_amount_type", "wrong_order", "wrong_namespace", "nbrpce_zero", "lowercase_bic"],
)
def test_generator_schema_defects_refused_by_both(official_aller, defect):
    a, b, oerr, merr = verdicts(official_aller, make_pes(defects=[defect]))
    assert a is False and b is False, (oerr[:2], merr[:2])


@pytest.mark.parametrize(
    "defect",
    ["nbrpce_mismatch", "duplicate_idbord", "bad_idcoll", "bad_cp", "bad_iban", "bad_siret_tiers", "civilite_on_company",
     "missing_civilite", "pjref_dangling", "mtbordht_mismatch", "infodemat_unsigned", "lowercase_iban"],
)
def test_generator_business_defects_pass_both_schemas(official_aller, defect):
    """These faults are invisible to the XSD (Hélios rejects them on business rules)."""
    a, b, oerr, merr = verdicts(official_aller, make_pes(defects=[defect]))
    assert a is True and b is True, (oerr[:2], merr[:2])


# ---- known, deliberate differences: blocks demat does not read are not controlled


def test_pes_facture_content_is_controlled_now(official_aller):
    """Issue 15: PES_Facture is no longer a block without control (see test_foreign_files.py)."""
    base = make_pes().decode("iso-8859-1")
    data = base.replace(" <PES_PJ>", " <PES_Facture><Quelconque V=\"1\"/></PES_Facture>\n <PES_PJ>").encode("iso-8859-1")
    a, b, _, _ = verdicts(official_aller, data)
    assert (a, b) == (False, False)


def test_known_difference_signature_content_not_controlled(official_aller):
    base = make_pes().decode("iso-8859-1")
    data = base.replace("  </Bordereau>", "  <ds:Signature><ds:Quelconque/></ds:Signature>\n  </Bordereau>", 1)
    a, b, _, _ = verdicts(official_aller, data.encode("iso-8859-1"))
    assert (a, b) == (False, True)  # flows.signature checks the signatures themselves


def test_file_signed_by_flows_signature_same_verdict(official_aller, tmp_path):
    """A PES signed in XAdES by the project's signer passes both schemas (and validate_pes)."""
    pki = pytest.importorskip("flows.signature.pki", reason="flows.signature pas encore disponible")
    xades = pytest.importorskip("flows.signature.xades", reason="flows.signature pas encore disponible")
    from flows.helios.validate import validate_pes

    info = pki.create_demo_pki(tmp_path, [("maire", "Claire Dupré", "Maire")])
    official = info["officials"]["maire"]
    password = open(official["password_file"], "rb").read().strip()
    signed = xades.sign_pes(make_pes(n_bordereaux=2), official["p12"], password, role="Maire")
    a, b, oerr, merr = verdicts(official_aller, signed)
    assert a is True and b is True, (oerr[:2], merr[:2])
    path = tmp_path / "signe.xml"
    path.write_bytes(signed)
    report = validate_pes(path)
    assert report.ok, report.to_text()
    assert report.summary["signed"] is True and report.summary["bordereaux_signes"] == 2
