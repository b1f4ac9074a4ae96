"""validate_pes: the three layers (reading/encoding, XSD, business rules), one test per fault."""

from __future__ import annotations

import pytest

from flows.findings import UnreadableFile
from flows.helios.validate import siret_ok, validate_pes

from .conftest import COLL, make_pes, write

SUMMARY_KEYS = {"nomfic", "idcoll", "idpost", "codcol", "codbud", "bordereaux", "pieces", "montant_total", "signed"}


def rules(report) -> set[str]:
    return {f.rule for f in report.findings}


def errors(report) -> set[str]:
    return {f.rule for f in report.errors}


def only(report, rule: str):
    found = [f for f in report.findings if f.rule == rule]
    assert found, report.to_text()
    return found[0]


# ----------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("kind", ["depense", "recette"])
def test_valid_file_has_no_finding(tmp_path, kind):
    path = write(tmp_path, make_pes(kind=kind, n_bordereaux=3, pieces_per_bordereau=4, lines_per_piece=2))
    report = validate_pes(path, known_nomfics={"PES_AUTRE"})
    assert report.kind == "pes_aller"
    assert report.ok and report.findings == [], report.to_text()
    s = report.summary
    assert SUMMARY_KEYS <= set(s)
    assert (s["nomfic"], s["idcoll"], s["idpost"], s["codcol"], s["codbud"]) == (
        "PES_TEST_0001",
        COLL["siret"],
        COLL["idpost"],
        COLL["codcol"],
        COLL["codbud"],
    )
    assert s["bordereaux"] == 3 and s["pieces"] == 12 and s["lignes"] == 24 and s["tiers"] == 24
    assert s["signed"] is False and s["schema"] == "conforme" and s["encodage"] == "iso-8859-1"
    assert s["montant_total"] == s["montant_bordereaux"]
    assert s["pj"] == 3


def test_summary_amount_is_sum_of_lines(tmp_path):
    data = make_pes(n_bordereaux=1, pieces_per_bordereau=1, lines_per_piece=1).decode("iso-8859-1")
    import re

    data = re.sub(r'<MtHT V="[^"]*"/>', '<MtHT V="1234.56"/>', data)
    data = re.sub(r'<MtBordHT V="[^"]*"/>', '<MtBordHT V="1234.56"/>', data)
    report = validate_pes(write(tmp_path, data.encode("iso-8859-1")))
    assert report.ok, report.to_text()
    assert report.summary["montant_total"] == "1234.56"


# ----------------------------------------------------------------------------- business rules


@pytest.mark.parametrize(
    ("defect", "rule", "severity"),
    [
        ("nbrpce_mismatch", "PES-NBRPCE", "error"),
        ("nbrpce_zero", "PES-NBRPCE-NUL", "error"),
        ("duplicate_idbord", "PES-IDBORD-DOUBLON", "error"),
        ("bad_idcoll", "PES-IDCOLL-SIRET", "error"),
        ("missing_nomfic", "PES-NOMFIC", "error"),
        ("infodemat_unsigned", "PES-INFODEMAT", "error"),
        ("missing_mtcumul", "PES-MTCUMUL", "error"),
        ("pjref_dangling", "PES-PJREF", "error"),
        ("duplicate_pj", "PES-PJ-DOUBLON", "error"),
        ("mtbordht_mismatch", "PES-MONTANT-BORDEREAU", "warning"),
    ],
)
@pytest.mark.parametrize("kind", ["depense", "recette"])
def test_each_business_defect_is_caught(tmp_path, defect, rule, severity, kind):
    report = validate_pes(write(tmp_path, make_pes(defects=[defect], kind=kind, n_bordereaux=2)))
    f = only(report, rule)
    assert f.severity == severity
    assert f.layer == "metier"
    assert f.message and f.fix, f
    assert f.place, f
    if severity == "error":
        assert not report.ok
    else:
        assert report.ok  # a warning alone does not refuse the file
    # no unrelated business finding
    unrelated = {r for r in rules(report) if r.startswith("PES-")} - {rule, "PES-MTCUMUL", "PES-INFODEMAT", "PES-NOMFIC"}
    assert not unrelated, report.to_text()


def test_nbrpce_names_place_value_and_fix(tmp_path):
    report = validate_pes(write(tmp_path, make_pes(defects=["nbrpce_mismatch"], pieces_per_bordereau=3)))
    f = only(report, "PES-NBRPCE")
    assert f.place == "bordereau 1 (mandats)"
    assert f.value == "4"
    assert "3" in f.fix
    assert f.line and f.line > 1


def test_duplicate_idbord_points_at_the_second(tmp_path):
    report = validate_pes(write(tmp_path, make_pes(defects=["duplicate_idbord"], n_bordereaux=3)))
    dups = [f for f in report.findings if f.rule == "PES-IDBORD-DOUBLON"]
    assert len(dups) == 1
    assert "ERREUR_DOUBLON_BORDEREAU" in dups[0].message


def test_same_idbord_different_type_or_domain_is_fine(tmp_path):
    data = make_pes(n_bordereaux=2).decode("iso-8859-1")
    # second bordereau: same IdBord but TypBord 02 (annulation): allowed
    first, second = data.split('<Bordereau Id="BORD2">')
    second = second.replace('<IdBord V="2"/>', '<IdBord V="1"/>', 1).replace('<TypBord V="01"/>', '<TypBord V="02"/>', 1)
    report = validate_pes(write(tmp_path, (first + '<Bordereau Id="BORD2">' + second).encode("iso-8859-1")))
    assert "PES-IDBORD-DOUBLON" not in rules(report), report.to_text()


def test_known_nomfic_is_a_duplicate(tmp_path):
    path = write(tmp_path, make_pes(nomfic="PES_2026_0042"))
    report = validate_pes(path, known_nomfics={"PES_2026_0041", "PES_2026_0042"})
    f = only(report, "PES-NOMFIC-DOUBLON")
    assert f.value == "PES_2026_0042"
    assert validate_pes(path, known_nomfics={"PES_2026_0041"}).ok


def test_idcoll_not_14_digits(tmp_path):
    data = make_pes().replace(f'<IdColl V="{COLL["siret"]}"/>'.encode(), b'<IdColl V="2140029330"/>')
    f = only(validate_pes(write(tmp_path, data)), "PES-IDCOLL-SIRET")
    assert "14 chiffres" in f.message and f.value == "2140029330"


def test_siret_vectors():
    assert siret_ok("73282932000074")
    assert siret_ok("35600000049837")  # La Poste: sum of digits multiple of 5
    assert not siret_ok("12345678912345")
    assert not siret_ok("7328293200007")
    assert not siret_ok("7328293200007A")


def _sign_first_bordereau(data: bytes) -> bytes:
    """Put a (fake) enveloped ds:Signature at the end of the first bordereau."""
    return data.replace(b"  </Bordereau>", b'  <ds:Signature Id="SIG1"><ds:SignedInfo/></ds:Signature>\n  </Bordereau>', 1)


def test_signed_with_infodemat_1_is_fine(tmp_path):
    data = make_pes(defects=["infodemat_unsigned"])  # InfoDematerialisee = 1
    report = validate_pes(write(tmp_path, _sign_first_bordereau(data)))
    assert "PES-INFODEMAT" not in rules(report), report.to_text()
    assert report.summary["signed"] is True and report.summary["bordereaux_signes"] == 1


def test_signed_with_infodemat_0_is_refused(tmp_path):
    report = validate_pes(write(tmp_path, _sign_first_bordereau(make_pes())))
    f = only(report, "PES-INFODEMAT")
    assert "signé" in f.message and f.value == "0"


def test_only_unsigned_bordereaux_are_reported(tmp_path):
    data = _sign_first_bordereau(make_pes(defects=["infodemat_unsigned"], n_bordereaux=3))
    report = validate_pes(write(tmp_path, data))
    places = [f.place for f in report.findings if f.rule == "PES-INFODEMAT"]
    assert places == ["bordereau 2 (mandats)", "bordereau 3 (mandats)"]


def test_global_signature_signs_every_bordereau(tmp_path):
    data = make_pes(defects=["infodemat_unsigned"], n_bordereaux=2)
    data = data.replace(b"</n:PES_Aller>", b"<ds:Signature><ds:SignedInfo/></ds:Signature>\n</n:PES_Aller>")
    report = validate_pes(write(tmp_path, data))
    assert "PES-INFODEMAT" not in rules(report), report.to_text()
    assert report.summary["signature_globale"] is True


def test_paper_pjref_needs_no_pj(tmp_path):
    data = make_pes(defects=["pjref_dangling"]).replace(b'<Support V="01"/>', b'<Support V="02"/>')
    assert "PES-PJREF" not in rules(validate_pes(write(tmp_path, data)))


def test_duplicate_piece_and_line_numbers(tmp_path):
    data = make_pes(pieces_per_bordereau=2, lines_per_piece=2).decode("iso-8859-1")
    data = data.replace('<IdPce V="2"/>', '<IdPce V="1"/>').replace('<IdLigne V="2"/>', '<IdLigne V="1"/>', 1)
    report = validate_pes(write(tmp_path, data.encode("iso-8859-1")))
    assert {"PES-IDPCE-DOUBLON", "PES-IDLIGNE-DOUBLON"} <= errors(report)
    f = only(report, "PES-IDLIGNE-DOUBLON")
    assert f.place == "bordereau 1 (mandats) / pièce 1 / ligne 1"


# ----------------------------------------------------------------------------- schema layer


@pytest.mark.parametrize(
    ("defect", "element", "place_part"),
    [
        ("missing_element", "TypBord", "bordereau 1"),
        ("bad_amount_type", "MtHT", "bordereau 1 / pièce 1 / ligne 1"),
        ("wrong_order", "IdBord", "bordereau 1"),
        ("lowercase_bic", "BIC", "tiers"),
        ("missing_nomfic", "Parametres", "enveloppe"),
    ],
)
def test_schema_faults_are_located(tmp_path, defect, element, place_part):
    report = validate_pes(write(tmp_path, make_pes(defects=[defect])))
    xsd = [f for f in report.findings if f.rule == "XSD"]
    assert xsd, report.to_text()
    f = xsd[0]
    assert f.layer == "xsd" and f.line and f.line > 1
    assert element in f.message and place_part in f.place, f
    assert report.summary["schema"] == "non conforme"


def test_schema_and_business_layers_reported_together(tmp_path):
    report = validate_pes(write(tmp_path, make_pes(defects=["bad_amount_type", "nbrpce_mismatch", "bad_idcoll"])))
    assert {"XSD", "PES-NBRPCE", "PES-IDCOLL-SIRET"} <= errors(report)


def test_wrong_namespace(tmp_path):
    report = validate_pes(write(tmp_path, make_pes(defects=["wrong_namespace"])))
    assert {"XSD", "PES-RACINE"} <= errors(report)
    assert only(report, "XSD").line == 1


# ----------------------------------------------------------------------------- encodings


def test_utf8_declared_latin1_names_line_and_byte(tmp_path):
    data = make_pes(defects=["utf8_declared_latin1"])
    report = validate_pes(write(tmp_path, data))
    f = only(report, "ENCODAGE")
    assert f.severity == "error" and f.layer == "encodage"
    offset = min(i for i, b in enumerate(data) if b >= 0x80)
    assert f.line == data[:offset].count(b"\n") + 1
    assert f"ligne {f.line}, octet {offset}" in f.message
    assert "UTF-8" in f.message
    assert not report.ok


def test_latin1_bytes_declared_utf8_names_line_and_byte(tmp_path):
    data = make_pes().replace(b'encoding="ISO-8859-1"', b'encoding="UTF-8"')
    report = validate_pes(write(tmp_path, data))
    f = only(report, "ENCODAGE")
    offset = min(i for i, b in enumerate(data) if b >= 0x80)
    assert f"octet {offset}" in f.message and f.line == data[:offset].count(b"\n") + 1
    assert "ENCODAGE-DECLARE" in rules(report)  # ISO-8859-1 is the norm
    assert not report.ok


def test_clean_utf8_file_only_warned(tmp_path):
    text = make_pes().decode("iso-8859-1").replace('encoding="ISO-8859-1"', 'encoding="UTF-8"')
    report = validate_pes(write(tmp_path, text.encode("utf-8")))
    assert report.ok, report.to_text()
    assert only(report, "ENCODAGE-DECLARE").severity == "warning"


def test_windows_1252_characters_warned(tmp_path):
    data = make_pes().replace(b"Bordereau Id=\"BORD1\">", b"Bordereau Id=\"BORD1\"><!-- co\x92t \x80 -->", 1)
    report = validate_pes(write(tmp_path, data))
    f = only(report, "ENCODAGE-CONTROLE")
    assert f.severity == "warning" and "0x92" in f.message


def test_ascii_only_file_is_fine(tmp_path):
    text = make_pes().decode("iso-8859-1")
    ascii_text = text.encode("ascii", errors="replace")
    report = validate_pes(write(tmp_path, ascii_text))
    assert not {r for r in rules(report) if r.startswith("ENCODAGE")}


# ----------------------------------------------------------------------------- hostile / broken XML


def test_doctype_refused(tmp_path):
    report = validate_pes(write(tmp_path, make_pes(defects=["doctype"])))
    f = only(report, "XML-DANGEREUX")
    assert "DOCTYPE" in f.message and f.line == 2
    assert not report.ok


def test_billion_laughs_refused_without_expansion(tmp_path):
    bomb = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10) for i in range(1, 10))
        + b"]>\n<lolz>&lol9;</lolz>"
    )
    report = validate_pes(write(tmp_path, bomb))
    assert errors(report) == {"XML-DANGEREUX"}


def test_undeclared_entity_is_malformed(tmp_path):
    data = make_pes().replace(b'<Sigle V="DEMAT"/>', b'<Sigle V="&xxe;"/>')
    f = only(validate_pes(write(tmp_path, data)), "XML-MALFORME")
    assert f.line == 10 and "xxe" in f.message


def test_truncated_file(tmp_path):
    data = make_pes()
    report = validate_pes(write(tmp_path, data[: len(data) // 2]))
    f = only(report, "XML-MALFORME")
    assert f.line and f.line > 10 and f.place.startswith("ligne")
    assert report.summary["nomfic"] == "PES_TEST_0001"  # what could be read is still summarised


def test_not_xml_at_all(tmp_path):
    report = validate_pes(write(tmp_path, b"%PDF-1.4 ceci n'est pas un PES"))
    assert "XML-MALFORME" in errors(report)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UnreadableFile):
        validate_pes(tmp_path / "absent.xml")
    with pytest.raises(UnreadableFile):
        validate_pes(write(tmp_path, b""))


def test_size_cap(tmp_path):
    report = validate_pes(write(tmp_path, make_pes()), max_bytes=1000)
    assert errors(report) == {"PES-TAILLE"}


# ----------------------------------------------------------------------------- real samples


@pytest.mark.parametrize(
    "name",
    ["PES_ex.xml", "HELIOS_SIMU_ALR2_1496987735_826268894.xml", "PESALR2_49101169800000_171227_2045.xml", "SHA256_bordereau.xml"],
)
def test_real_samples_do_not_crash(samples, name):
    report = validate_pes(samples / name)
    assert SUMMARY_KEYS <= set(report.summary)
    assert report.summary["bordereaux"] == 1 and report.summary["pieces"] == 1
    report.to_text()
    report.to_json()


def test_real_sample_valid(samples):
    report = validate_pes(samples / "PES_ex.xml")
    assert report.ok and not report.findings, report.to_text()
    assert report.summary["idcoll"] == "24310063300011" and report.summary["montant_total"] == "55.22"


@pytest.mark.parametrize(
    "name", ["HELIOS_SIMU_ALR2_1496987735_826268894.xml", "PESALR2_49101169800000_171227_2045.xml", "SHA256_bordereau.xml"]
)
def test_real_sample_siret_fault_reported_precisely(samples, name):
    report = validate_pes(samples / name)
    f = only(report, "PES-IDCOLL-SIRET")
    assert f.value == "12345678912345"
    assert f.line == 19
    assert "clé" in f.message and f.place == "en-tête (EnTetePES / IdColl)"


def test_real_sample_misplaced_pj_located(samples):
    report = validate_pes(samples / "PESALR2_49101169800000_171227_2045.xml")
    xsd = [(f.line, f.place) for f in report.findings if f.rule == "XSD"]
    assert (142, "PJ") in xsd
    assert any(line == 141 and "PES_PJ" in place for line, place in xsd)
    assert report.summary["signed"] is True  # its bordereau carries a XAdES signature
