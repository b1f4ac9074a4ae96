"""Issue 15: PES files written by other systems get the right verdict.

- PES_ACQUIT checked against the acquit schema (project's schemas/pes/PES_Acquit.xsd at run time,
  proven to give the official PES_V2_Acquit_Autonome_V2.xsd's verdict);
- PES_Marche / PES_Facture content controlled by the project XSD (same verdict as the official
  one on generated files), and a marché-only PES is not "vide";
- SIRET/SIREN: the part whose key fails is named;
- `demat validate` checks the integrity of every signature present;
- `demat sign` refuses, before signing, a file the signature would make invalid;
- no raw English libxml2 fragment leads an agent's message.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from lxml import etree

from flows.cli import main
from flows.helios.acquit import acquit_schema, build_acquit, validate_acquit
from flows.helios.generate import facture_block, marche_block, with_blocks
from flows.helios.validate import project_schema, siret_problem, validate_pes

from .conftest import COLL, make_pes, parse, write

SIRET = COLL["siret"]


def _rules(report, severity: str | None = None) -> set[str]:
    return {f.rule for f in report.findings if severity is None or f.severity == severity}


# ============================================================================ PES_ACQUIT

ACQUIT_SAMPLES = {
    "ACQUIT_PESALR2_49101169800000_171227_2045.xml": True,
    "PES_ACQUIT_ok.xml": True,
    "006111_190130123456-ACK-A3020100_A0000IDL_KO.xml": False,  # CodCol 000
    "006111_190130123456-ACK-A3020100_A0000SDP_KO.xml": False,
}


@pytest.mark.parametrize("name", sorted(ACQUIT_SAMPLES))
def test_real_acquits_same_verdict_as_official(official_acquit, samples, name):
    doc = parse((samples / name).read_bytes())
    a, b = official_acquit.validate(doc), acquit_schema().validate(doc)
    assert a is ACQUIT_SAMPLES[name], list(official_acquit.error_log)[:2]
    assert b is a


def _acquit_sub(pattern: str, repl: str) -> Callable[[str], str]:
    def f(text: str) -> str:
        new, n = re.subn(pattern, repl, text, count=1)
        assert n, pattern
        return new

    return f


ACQUIT_MUTATIONS = {
    "valide": (lambda t: t, True),
    "CodCol hors motif (000)": (_acquit_sub(r'<CodCol V="\d+"/>', '<CodCol V="000"/>'), False),
    "CodCol alphabétique": (_acquit_sub(r'<CodCol V="\d+"/>', '<CodCol V="A12"/>'), False),
    "élément inventé": (_acquit_sub(r"(<EtatAck V=\"[01]\"/>)", r'\1<Commentaire V="x"/>'), False),
    "DomaineAck inconnu": (_acquit_sub(r'<DomaineAck V="\d+"/>', '<DomaineAck V="13"/>'), False),
    "NumAnoAck inconnu": (_acquit_sub(r'<NumAnoAck V="[A-Z_]+"/>', '<NumAnoAck V="ERREUR_INVENTEE"/>'), False),
    "EtatAck non booléen": (_acquit_sub(r'<EtatAck V="[01]"/>', '<EtatAck V="2"/>'), False),
    "NumBord de 8 chiffres": (_acquit_sub(r'<NumBord V="\d+"/>', '<NumBord V="12345678"/>'), False),
    "IdPost hors motif": (_acquit_sub(r'<IdPost V="\d+"/>', '<IdPost V="12A"/>'), False),
    "sans ElementACQUIT": (_acquit_sub(r"(?s)<ElementACQUIT>.*</ElementACQUIT>", ""), False),
    "Version nulle": (_acquit_sub(r'<Version V="\d+"/>', '<Version V="0"/>'), False),
    "NomFic vide": (_acquit_sub(r'<NomFic V="[^"]*"/>', '<NomFic V=""/>'), False),
    "LibelleAnoAck de 501 caractères": (_acquit_sub(r'<LibelleAnoAck V="[^"]*"/>', f'<LibelleAnoAck V="{"x" * 501}"/>'), False),
    "DteStr invalide": (_acquit_sub(r'<DteStr V="[^"]*"/>', '<DteStr V="2025-13-45"/>'), False),
}


def _generated_acquit(refused: bool) -> str:
    from flows.findings import Finding

    pes = make_pes(n_bordereaux=2)
    findings = [Finding("PES-NBRPCE", "NbrPce faux", place="bordereau 2 / pièce 3")] if refused else []
    return build_acquit(pes, findings).decode("iso-8859-1")


@pytest.mark.parametrize("refused", [False, True], ids=["accepte", "refuse"])
@pytest.mark.parametrize("mutation", sorted(ACQUIT_MUTATIONS))
def test_generated_acquits_same_verdict_as_official(official_acquit, mutation, refused):
    change, expected = ACQUIT_MUTATIONS[mutation]
    text = _generated_acquit(refused)
    if mutation in ("NumAnoAck inconnu", "LibelleAnoAck de 501 caractères") and not refused:
        pytest.skip("un acquit accepté n'a pas d'erreur")
    doc = parse(change(text).encode("iso-8859-1"))
    a, b = official_acquit.validate(doc), acquit_schema().validate(doc)
    assert a is expected, list(official_acquit.error_log)[:2]
    assert b is a, list(acquit_schema().error_log)[:2]


@pytest.mark.parametrize("mutation", ["CodCol hors motif (000)", "élément inventé"])
def test_acquit_breaking_the_schema_is_refused(tmp_path, mutation, capsys):
    """Before issue 15 these came out "VALIDE": the acquit was never checked against a schema."""
    text = ACQUIT_MUTATIONS[mutation][0](_generated_acquit(False))
    path = write(tmp_path, text.encode("iso-8859-1"), "acquit.xml")
    report = validate_acquit(path)
    assert not report.ok and "ACQUIT-XSD" in _rules(report, "error")
    f = next(f for f in report.errors if f.rule == "ACQUIT-XSD")
    assert f.message.startswith("acquit.xml : l'acquit ne respecte pas le schéma PES_ACQUIT")
    assert "libxml2 :" in f.message and f.fix
    assert main(["validate", str(path)]) == 1
    assert "ACQUIT-XSD" in capsys.readouterr().out


def test_valid_acquit_is_valid_and_refusal_is_said(tmp_path):
    ok = validate_acquit(write(tmp_path, _generated_acquit(False).encode("iso-8859-1"), "ok.xml"))
    assert ok.ok and not ok.findings and ok.summary["accepte"] is True
    ko = validate_acquit(write(tmp_path, _generated_acquit(True).encode("iso-8859-1"), "ko.xml"))
    assert ko.ok and ko.summary["accepte"] is False  # a well-formed refusal is a valid acquit ...
    assert "ACQUIT-REFUS" in _rules(ko, "warning")  # ... that says what Hélios refused


def test_hostile_acquit_is_unreadable(tmp_path):
    from flows.findings import UnreadableFile

    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><n:PES_ACQUIT xmlns:n="x">&a;</n:PES_ACQUIT>'
    with pytest.raises(UnreadableFile):
        validate_acquit(write(tmp_path, bomb, "bomb.xml"))
    truncated = _generated_acquit(False).encode("iso-8859-1")[:300]
    with pytest.raises(UnreadableFile) as exc:
        validate_acquit(write(tmp_path, truncated, "tronque.xml"))
    assert "bien formé" in str(exc.value)


# ============================================================================ PES_Marche / PES_Facture


def _blocks(**kw) -> bytes:
    return with_blocks(make_pes(), **kw)


MARCHE = marche_block(siret=SIRET)
FACTURE = facture_block()

BLOCK_MUTATIONS: dict[str, tuple[Callable[[], bytes], bool]] = {
    "marché valide": (lambda: _blocks(marche=MARCHE), True),
    "facture valide": (lambda: _blocks(facture=FACTURE), True),
    "marché et facture": (lambda: _blocks(marche=MARCHE, facture=FACTURE), True),
    "marché seul": (lambda: _blocks(marche=MARCHE, keep_domains=False), True),
    "marché : CPV mal formé": (lambda: _blocks(marche=MARCHE.replace("45233140-2", "4523")), False),
    "marché : nature hors liste": (lambda: _blocks(marche=marche_block(siret=SIRET, nature="09")), False),
    "marché : procédure hors liste": (lambda: _blocks(marche=marche_block(siret=SIRET, procedure="11")), False),
    "marché : montant négatif": (lambda: _blocks(marche=marche_block(siret=SIRET, montant="-5.00")), False),
    "marché : montant à 3 décimales": (lambda: _blocks(marche=marche_block(siret=SIRET, montant="5.001")), False),
    "marché : IdContrat hors motif": (lambda: _blocks(marche=marche_block(siret=SIRET, idcontrat="1999ABC")), False),
    "marché : acheteur sans SIRET": (lambda: _blocks(marche=MARCHE.replace(f'<IdAcheteur V="{SIRET}"/>', "")), False),
    "marché : sans objet": (lambda: _blocks(marche=re.sub(r'\s*<Objet V="[^"]*"/>', "", MARCHE)), False),
    "marché : élément inventé": (lambda: _blocks(marche=MARCHE.replace("<DureeEnMois", '<Inconnu V="1"/><DureeEnMois')), False),
    "marché : sans ConditionsExecution": (lambda: _blocks(marche=re.sub(r"\s*<ConditionsExecution>.*?</ConditionsExecution>", "", MARCHE)), False),
    "marché : sans Marches ni Concessions": (lambda: _blocks(marche=re.sub(r"(?s)\s*<Marches>.*</Marches>", "", MARCHE)), False),
    "marché : date de notification invalide": (lambda: _blocks(marche=MARCHE.replace("2025-03-01", "2025-02-30")), False),
    "facture : année invalide": (lambda: _blocks(facture=FACTURE.replace('<Annee V="2025"/>', '<Annee V="25"/>')), False),
    "facture : sans FactureIndiv": (lambda: _blocks(facture=re.sub(r"(?s)\s*<FactureIndiv>.*</FactureIndiv>", "", FACTURE)), False),
    "facture : sans émetteur": (lambda: _blocks(facture=re.sub(r"\s*<Emetteur>.*?</Emetteur>", "", FACTURE)), False),
    "facture : type hors liste": (lambda: _blocks(facture=FACTURE.replace('<Date V=', '<TypeFact V="14"/><Date V=', 1)), False),
    "facture : élément inventé en tête": (lambda: _blocks(facture=FACTURE.replace("<Emetteur>", '<Quelconque V="1"/><Emetteur>')), False),
    "facture : sans Nomenclatures": (lambda: _blocks(facture=FACTURE.replace("  <Nomenclatures/>\n", "")), False),
    "blocs dans le mauvais ordre (marché avant facture)": (lambda: _swap_blocks(), False),
    "marché : modalité d'exécution hors liste": (lambda: _blocks(marche=MARCHE.replace(
        '<ModaliteExecution V="01"/>', '<ModaliteExecution V="07"/>')), False),
    "marché : élément inventé dans les conditions": (lambda: _blocks(marche=MARCHE.replace(
        "<ConditionsExecution>", '<ConditionsExecution><Inconnu V="1"/>')), False),
    "marché : trois CPV secondaires": (lambda: _blocks(marche=MARCHE.replace(
        '<MultiBudget V="false"/>', '<MultiBudget V="false"/><CodesCPVSec><CodeCPVSec V="45233140"/>'
        '<CodeCPVSec V="45233141-9"/><CodeCPVSec V="45233142"/></CodesCPVSec>')), True),
    "marché : quatre CPV secondaires": (lambda: _blocks(marche=MARCHE.replace(
        '<MultiBudget V="false"/>', '<MultiBudget V="false"/><CodesCPVSec>' + '<CodeCPVSec V="45233140"/>' * 4
        + "</CodesCPVSec>")), False),
    "facture : type de tiers hors liste": (lambda: _blocks(facture=FACTURE.replace(
        '<TypTiers V="01"/><Nom V="DUPONT"/>', '<TypTiers V="08"/><Nom V="DUPONT"/>')), False),
    "facture : débiteur sans nom": (lambda: _blocks(facture=FACTURE.replace('<Nom V="DUPONT"/>', "")), False),
    "facture : taux de TVA négatif": (lambda: _blocks(facture=FACTURE.replace(
        '<TauxTVA V="0.00"/>', '<TauxTVA V="-5.50"/>')), False),
    "facture : sans total à payer": (lambda: _blocks(facture=re.sub(r"\s*<TotalAPayer>.*?</TotalAPayer>", "", FACTURE)),
                                     False),
    "facture : quantité et prix unitaire": (lambda: _blocks(facture=FACTURE.replace(
        '<MtBase V="100.00"/>', '<Quantite V="2"/><MtUnitaire V="50.00"/>')), True),
    "facture : élément inventé dans la facture": (lambda: _blocks(facture=FACTURE.replace(
        "<FactureIndiv>", '<FactureIndiv><Inconnu V="1"/>')), False),
}


def _swap_blocks() -> bytes:
    data = _blocks(marche=MARCHE, facture=FACTURE).decode("iso-8859-1")
    f0, f1 = data.index(" <PES_Facture>"), data.index("</PES_Facture>\n") + len("</PES_Facture>\n")
    facture = data[f0:f1]
    data = data[:f0] + data[f1:]
    m1 = data.index("</PES_Marche>\n") + len("</PES_Marche>\n")
    return (data[:m1] + facture + data[m1:]).encode("iso-8859-1")


@pytest.mark.parametrize("name", sorted(BLOCK_MUTATIONS))
def test_marche_facture_same_verdict_as_official(official_aller, name):
    build, expected = BLOCK_MUTATIONS[name]
    doc = parse(build())
    a, b = official_aller.validate(doc), project_schema().validate(doc)
    assert a is expected, list(official_aller.error_log)[:2]
    assert b is a, f"officiel={a} projet={b} {list(project_schema().error_log)[:2]}"


@pytest.mark.parametrize("name", ["marché : CPV mal formé", "marché : nature hors liste",
                                  "facture : sans FactureIndiv", "marché : élément inventé"])
def test_marche_facture_faults_are_refused_by_validate(tmp_path, name):
    """Before issue 15 these blocks were accepted without control."""
    report = validate_pes(write(tmp_path, BLOCK_MUTATIONS[name][0]()))
    assert not report.ok and "XSD" in _rules(report, "error")
    assert all(not f.message.startswith("Element") for f in report.findings)


def test_marche_only_pes_is_not_empty(tmp_path):
    report = validate_pes(write(tmp_path, BLOCK_MUTATIONS["marché seul"][0]()))
    assert "PES-VIDE" not in _rules(report), report.to_text()
    assert report.ok, report.to_text()
    assert "marche" in report.summary["domaines"]
    from flows.helios.inspect import format_inspection, inspect_pes

    assert "Domaines : marché (PES_Marche)" in format_inspection(inspect_pes(tmp_path / "pes.xml"))
    empty = re.sub(rb"(?s)\s*<PES_(Marche|PJ)>.*</PES_(Marche|PJ)>", b"", BLOCK_MUTATIONS["marché seul"][0]())
    assert "PES-VIDE" in _rules(validate_pes(write(tmp_path, empty, "vide.xml")))


# ============================================================================ SIREN / SIRET


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _siret_with_bad_siren() -> str:
    """14 digits whose whole key is right but whose SIREN (first 9) fails its own key."""
    for tail in range(10000, 99999):
        for siren in ("214002933", "214002934", "123456780", "123456781"):
            cand = f"{siren}{tail:05d}"
            if _luhn_ok(cand) and not _luhn_ok(siren):
                return cand
    raise AssertionError("introuvable")


def test_siren_part_wrong_is_named(tmp_path):
    idcoll = _siret_with_bad_siren()
    assert _luhn_ok(idcoll) and not _luhn_ok(idcoll[:9])
    report = validate_pes(write(tmp_path, make_pes(siret=idcoll)))
    f = next(f for f in report.errors if f.rule == "PES-IDCOLL-SIRET")
    assert "SIREN" in f.message and idcoll[:9] in f.message
    assert "clé du SIRET" not in f.message  # the SIRET key itself is right: it must not be blamed
    assert "9 premiers chiffres" in f.fix


def test_siret_key_wrong_with_good_siren_is_named(tmp_path):
    good = SIRET
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    why, fix = siret_problem(bad)
    assert "SIREN" in why and "correct" in why and "clé du SIRET" in why and "NIC" in fix
    why, _ = siret_problem("2140029330001")
    assert "14 chiffres" in why


# ============================================================================ signatures present


@pytest.fixture(scope="module")
def demo_pki(tmp_path_factory):
    from flows.signature.pki import create_demo_pki

    return create_demo_pki(tmp_path_factory.mktemp("pki"), [("maire", "Claire Dupré", "Maire")], ca_key_size=2048)


def _sign(pes: bytes, demo_pki) -> bytes:
    from pathlib import Path

    from flows.signature.xades import sign_pes

    info = demo_pki["officials"]["maire"]
    return sign_pes(pes, info["p12"], Path(info["password_file"]).read_bytes().strip(), role="Maire")


def test_validate_refuses_bordereau_changed_after_signing(tmp_path, demo_pki):
    signed = _sign(make_pes(n_bordereaux=2), demo_pki)
    assert validate_pes(write(tmp_path, signed, "signe.xml")).ok
    text = signed.decode("iso-8859-1")
    m = re.search(r'<MtHT V="([0-9.]+)"/>', text)
    tampered = (text[: m.start()] + '<MtHT V="1.00"/>' + text[m.end():]).encode("iso-8859-1")
    report = validate_pes(write(tmp_path, tampered, "modifie.xml"))
    assert not report.ok
    sig = [f for f in report.errors if f.layer == "signature"]
    assert sig and sig[0].rule == "SIG-EMPREINTE", report.to_text()
    assert "modifie.xml" in sig[0].message and "Contenu signé modifié" in sig[0].message
    assert sig[0].place.startswith("bordereau ")


def test_sign_refuses_before_signing_a_file_it_would_break(tmp_path, demo_pki, capsys):
    """Signing sets InfoDematerialisee=1, which requires MtCumulAnnuel: refuse first, say why."""
    unsigned = re.sub(rb'\s*<MtCumulAnnuel V="[^"]*"/>', b"", make_pes())
    src = write(tmp_path, unsigned, "sans_cumul.xml")
    assert validate_pes(src).ok  # valid as it is (unsigned)
    info = demo_pki["officials"]["maire"]
    out = tmp_path / "signe.xml"
    code = main(["sign", str(src), "--p12", info["p12"], "--password-file", info["password_file"],
                 "--role", "Maire", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1 and not out.exists()
    assert "PES-SIGNATURE-MTCUMUL" in text and "MtCumulAnnuel" in text and "avant de signer" in text


def test_signing_a_valid_file_gives_a_valid_file(tmp_path, demo_pki):
    src = write(tmp_path, make_pes(n_bordereaux=2), "pes.xml")
    info = demo_pki["officials"]["maire"]
    out = tmp_path / "signe.xml"
    assert main(["sign", str(src), "--p12", info["p12"], "--password-file", info["password_file"],
                 "--role", "Maire", "--out", str(out)]) == 0
    report = validate_pes(out)
    assert report.ok, report.to_text()
    assert report.summary["bordereaux_signes"] == 2


# ============================================================================ French first


def test_truncated_pes_message_is_french_first(tmp_path):
    data = make_pes()
    report = validate_pes(write(tmp_path, data[: len(data) // 2], "tronque.xml"))
    f = next(f for f in report.errors if f.rule == "XML-MALFORME")
    head = f.message.split("(libxml2 :")[0]
    assert "Premature" not in head and "tag" not in head.split(":")[-1]
    assert "tronqué" in f.message or "fin de fichier" in f.message


def test_schema_messages_are_french_first(tmp_path):
    bad = make_pes().replace(b'<CodCol V="293"/>', b'<CodCol V="29X"/>')
    report = validate_pes(write(tmp_path, bad))
    xsd = [f for f in report.errors if f.rule == "XSD"]
    assert xsd
    for f in xsd:
        assert not f.message.startswith(("Element", "The value")), f.message
        english = f.message.split("(détail libxml2 :")[0]
        assert "is not" not in english and "Element '" not in english


def test_xsd_translation_covers_the_usual_libxml2_messages():
    from flows.helios.xsdtext import syntax_fr, xsd_parts

    samples = [
        "Element 'CodCol', attribute 'V': [facet 'pattern'] The value '000' is not accepted by the pattern '[0-9]{3}'.",
        "Element 'Foo': This element is not expected. Expected is ( Bar ).",
        "Element 'Bordereau': Missing child element(s). Expected is ( BlocBordereau ).",
        "Element 'DteStr', attribute 'V': '2025-13-01' is not a valid value of the atomic type 'xs:date'.",
        "Element 'EtatAck', attribute 'V': [facet 'enumeration'] The value '2' is not an element of the set {'0', '1'}.",
        "Element 'IdVer': The attribute 'V' is required but missing.",
        "Element '{urn:x}Racine': No matching global declaration available for the validation root.",
    ]
    for raw in samples:
        _name, _value, text = xsd_parts(raw)
        head = text.split(" (libxml2 :")[0]
        assert "Element" not in head and " is " not in head and "expected" not in head, head
        assert text.endswith(f"(libxml2 : {raw})")
    for raw in ["Premature end of data in tag Bordereau line 3", "Opening and ending tag mismatch: a line 1 and b",
                "Extra content at the end of the document", "Start tag expected, '<' not found"]:
        head = syntax_fr(raw).split(" (libxml2 :")[0]
        assert head and not any(w in head for w in ("Premature", "mismatch", "Extra", "expected")), head


def test_project_acquit_schema_is_well_formed_and_standalone():
    """Run time never reads ../shared: the acquit schema is the project's own file."""
    from flows.helios.acquit import ACQUIT_SCHEMA_PATH

    assert "shared" not in ACQUIT_SCHEMA_PATH.parts
    tree = etree.parse(str(ACQUIT_SCHEMA_PATH))
    assert not [i for i in tree.iter("{http://www.w3.org/2001/XMLSchema}import", "{http://www.w3.org/2001/XMLSchema}include")]


@pytest.mark.parametrize("where,old,new", [
    ("TechniquesAchat", '<MultiBudget V="false"/>', '<MultiBudget V="false"/><TechniquesAchat><Inconnu V="1"/></TechniquesAchat>'),
    ("Adresse du débiteur", '<Prenom V="JEAN"/></InfoTiers>', '<Prenom V="JEAN"/></InfoTiers><Adresse><Inconnu V="1"/></Adresse>'),
])
def test_known_difference_deep_marche_facture_content_not_controlled(official_aller, where, old, new):
    """Known and deliberate: the deeper sub-blocks (techniques d'achat, considérations, opérateurs,
    ventilations, modifications, concessions, adresses et comptes des tiers de facture, dossiers
    patients) are required where the PES requires them, but their content is not controlled.
    This test keeps the difference known; if it starts failing, the project XSD caught up."""
    data = _blocks(marche=MARCHE, facture=FACTURE).decode("iso-8859-1").replace(old, new, 1).encode("iso-8859-1")
    doc = parse(data)
    assert (official_aller.validate(doc), project_schema().validate(doc)) == (False, True), where
