"""The préfecture simulator judges actes on its own: the official @ctes schema for every message (the
envelope included), real PDFs, the matière against the classification it published, the mayor's
detached XAdES against its own trust store, and what it received before (annulations, answers)."""

from __future__ import annotations

import io
import tarfile
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from flows.actes.model import NS_ACTES
from simulators import reference as simref
from simulators.prefecture import prefecture_rules, published_matieres
from tests.unit.simulators.conftest import incoming

CLASSIFICATION = "2024-01-15"


@pytest.fixture(scope="module")
def coll():
    from flows.config import load_config

    return load_config(Path(__file__).resolve().parents[3] / "flows" / "config" / "demo.yaml").collectivite("saint-sever")


def transmission(coll, *, numero="T1", matiere="5.2", defects=(), signature: bytes | None = None,
                 document: bytes | None = None, objet="Délibération de test") -> tuple[str, bytes]:
    """The archive the platform sends (flows' own builders, as in production)."""
    import dataclasses

    from flows.actes.classification import national_default
    from flows.actes.generate import generate_acte_zip
    from flows.actes.intake import read_submission
    from flows.actes.model import Document
    from flows.actes.transmission import build_transmission

    sub = read_submission(generate_acte_zip(collectivite=coll, numero=numero, matiere=matiere, defects=defects,
                                            objet=objet))
    if document is not None:
        sub.document = dataclasses.replace(sub.document, data=document)
    if signature is not None:
        sub.annexes.append(Document("acte-signature.xml", signature, typologie="99_SE"))
    tx = build_transmission(sub, coll, serial=1, classification=national_default(date.fromisoformat(CLASSIFICATION)))
    return tx.archive_name, tx.archive_bytes


def answer(name: str, data: bytes, *, pki: dict | None = None, known=lambda key: False, **settings):
    extra = {"classification_date": CLASSIFICATION, "trust_store": [pki["ca"]] if pki else []}
    decision = prefecture_rules(incoming(name, data, known=known, extra=extra, **settings))
    kinds = []
    for reply in decision.replies:
        with tarfile.open(fileobj=io.BytesIO(reply.data), mode="r:gz") as tar:
            for m in tar:
                if m.name.endswith("_0.xml") or m.name.startswith("ANO_"):
                    kinds.append(etree.QName(etree.fromstring(tar.extractfile(m).read())).localname)
    return kinds, decision.outcome


def detached(pki: dict, pdf: bytes) -> bytes:
    from flows.signature.detached import sign_detached

    info = pki["officials"]["maire"]
    return sign_detached(pdf, info["p12"], Path(info["password_file"]).read_bytes().strip(), role="Maire",
                         name="acte.pdf", place="Saint-Sever")


def the_pdf(coll) -> bytes:
    from flows.actes.generate import generate_acte_zip
    from flows.actes.intake import read_submission

    return read_submission(generate_acte_zip(collectivite=coll, numero="T1", objet="Délibération de test")).document.data


def test_the_platform_acte_is_acknowledged(coll, pki):
    kinds, outcome = answer(*transmission(coll, signature=detached(pki, the_pdf(coll))), pki=pki)
    assert kinds == ["ARActe"], outcome


def test_the_official_schema_is_used_when_the_reference_set_is_there(reference, monkeypatch):
    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(reference))
    located = simref.locate("actes")
    assert located.official and located.path.name == "actesv1_1.xsd", located
    assert simref.locate("pes").official and "officiel" in simref.describe()


def test_without_a_reference_set_the_project_schema_stands_in(monkeypatch, tmp_path):
    monkeypatch.setenv("DEMAT_REFERENCE_DIR", str(tmp_path / "absent"))
    for kind in ("actes", "pes"):
        located = simref.locate(kind)
        assert not located.official and located.path.is_file()
    assert "du projet" in simref.describe()


@pytest.mark.parametrize(("matiere", "ok"), [("5.2", True), ("5.2.9", False), ("9.9", False)])
def test_matiere_is_checked_against_the_published_classification(coll, matiere, ok):
    assert ("5", "2") in published_matieres(date(2024, 1, 15))
    kinds, outcome = answer(*transmission(coll, matiere=matiere))
    assert kinds == (["ARActe"] if ok else ["AnomalieActe"]), outcome
    if not ok:
        assert matiere in outcome and "classification publiée" in outcome


def test_a_document_that_is_not_a_real_pdf_is_refused(coll):
    kinds, outcome = answer(*transmission(coll, document=b"%PDF-1.4\nceci n'est pas un PDF\n%%EOF"))
    assert kinds == ["AnomalieActe"] and "n'est pas un PDF valide" in outcome, outcome
    kinds, outcome = answer(*transmission(coll, document=b"GIF89a..."))
    assert kinds == ["AnomalieActe"] and "%PDF-" in outcome, outcome


def test_detached_signature_of_another_document_or_ca_is_refused(coll, pki, stranger_pki):
    other = detached(pki, the_pdf(coll) + b"\n% une autre version\n")
    kinds, outcome = answer(*transmission(coll, signature=other), pki=pki)
    assert kinds == ["AnomalieActe"] and "signature invalide" in outcome, outcome
    kinds, outcome = answer(*transmission(coll, signature=detached(stranger_pki, the_pdf(coll))), pki=pki)
    assert kinds == ["AnomalieActe"] and "certificat refusé" in outcome, outcome
    kinds, outcome = answer(*transmission(coll, signature=b"<pas une signature/>"), pki=pki)
    assert kinds == ["AnomalieActe"], outcome


def test_envelope_not_conforming_to_the_official_schema_gets_anomalie_enveloppe(coll):
    name, data = transmission(coll)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    fixed = []
    for n, content in members:
        if n.startswith("EACT--"):
            root = etree.fromstring(content)
            etree.SubElement(root, f"{{{NS_ACTES}}}Intrus").text = "x"  # not in EnveloppeCLMISILL
            content = etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1")
        fixed.append((n, content))
    from flows.actes.transmission import make_tar_gz

    kinds, outcome = answer(name, make_tar_gz(fixed, date.today()))
    assert kinds == ["AnomalieEnveloppe"] and "Enveloppe non conforme au schéma" in outcome, outcome


def test_size_refusal_states_the_limit_it_applies(coll):
    from simulators.counterparts import Incoming, Settings

    s = Settings(max_bytes=200 * 1024 * 1024, extra={"classification_date": CLASSIFICATION})
    inc = Incoming(name="TDT-EACT--214002933--20261201-1.tar.gz", data=b"", sha256="0", rng=__import__("random").Random(0),
                   settings=s, reception_id=1, received_at=0, too_large=True)
    outcome = prefecture_rules(inc).outcome
    assert "200 Mio" in outcome and "150" not in outcome, outcome


def test_an_acte_lost_on_its_way_gets_no_answer(coll):
    kinds, outcome = answer(*transmission(coll, objet="Acte [simulateur:perdu]"))
    assert kinds == [] and "perdu" in outcome


def test_annulation_needs_an_acte_the_prefecture_received(coll):
    """The platform's own 6-1 builder: refused for an acte never received, acknowledged for a received one."""
    from flows.actes.transmission import build_annulation

    idacte = f"040-{coll.siren}-20260105-T1-DE"
    tx = build_annulation(idacte, coll, serial=2)
    name, data = tx.archive_name, tx.archive_bytes
    kinds, outcome = answer(name, data)
    assert kinds == ["AnomalieEnveloppe"] and "jamais été reçu" in outcome, outcome
    kinds, outcome = answer(name, data, known=lambda key: key == f"idacte:{idacte}")
    assert kinds == ["ARAnnulation"], outcome


def pades(pki: dict, pdf: bytes) -> bytes:
    from flows.signature.pades import sign_pdf

    info = pki["officials"]["maire"]
    return sign_pdf(pdf, info["p12"], Path(info["password_file"]).read_bytes().strip(), role="Maire", place="Saint-Sever")


def test_pades_signature_inside_the_pdf_is_verified_with_openssl(coll, pki, stranger_pki):
    signed = pades(pki, the_pdf(coll))
    kinds, outcome = answer(*transmission(coll, document=signed), pki=pki)
    assert kinds == ["ARActe"], outcome
    tampered = signed.replace(b"/Type /Catalog", b"/Type /Catalof", 1)
    assert tampered != signed
    kinds, outcome = answer(*transmission(coll, document=tampered), pki=pki)
    assert kinds == ["AnomalieActe"] and "modifié après la signature" in outcome, outcome
    kinds, outcome = answer(*transmission(coll, document=signed + b"\n% ajout\n"), pki=pki)
    assert kinds == ["AnomalieActe"] and "ne couvre pas tout" in outcome, outcome
    kinds, outcome = answer(*transmission(coll, document=pades(stranger_pki, the_pdf(coll))), pki=pki)
    assert kinds == ["AnomalieActe"] and "autorité de confiance" in outcome, outcome
