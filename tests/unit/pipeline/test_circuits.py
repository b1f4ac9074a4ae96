"""Parapheur circuits in the domain: visas then a signature, rejection, expiry, automatic circuits.

Each step is driven as the dossier DAG drives it (parapheur_request -> answer -> record_decision,
then sign), on a real PostgreSQL, with the demo configuration: the CC Chalosse Tursan's contrats
go through two visas (DGS, finances) then the president's signature; Saint-Sever's actes are
signed by the mayor with a detached XAdES that travels as the 99_SE file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from flows.config import ConfigError, load_config
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.dossier.store import ArtefactStore
from flows.pipeline import steps
from flows.settings import REPO, Settings

DEMO = REPO / "flows" / "config" / "demo.yaml"


@pytest.fixture
def settings(tmp_path, demat_db, monkeypatch) -> Settings:
    from flows.signature.pki import create_demo_pki

    state = tmp_path / "state"
    monkeypatch.setenv("DEMAT_STATE", str(state))
    s = Settings(state_dir=state, config_path=DEMO, database_url=demat_db, store_root=str(state / "store"),
                 inbox_root=state / "inbox", pki_dir=state / "pki", reference_dir=tmp_path / "reference")
    officials = [(o.certificate, o.name, o.role) for c in s.config.collectivites for o in c.officials]
    create_demo_pki(s.pki_dir, officials, ca_key_size=2048)
    return s


def _dossier(settings: Settings, coll_slug: str, nature: str, numero: str, matiere: str = "1.1") -> str:
    from flows.actes.generate import generate_acte_zip

    coll = settings.config.collectivite(coll_slug)
    data = generate_acte_zip(collectivite=coll, numero=numero, nature=nature, matiere=matiere,
                             objet=f"Acte {numero} soumis au circuit")
    sha = ArtefactStore(settings.store_root).put(data)
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=coll.slug, flow="actes", original_name=f"{numero}.zip", sha256=sha,
                           size=len(data))
        dossier_id = d.id
    assert steps.validate(settings, dossier_id).state == "valide"
    return dossier_id


def _answer(option: str, user: str, name: str, motif: str = "") -> dict:
    return {"chosen_options": [option], "params_input": {"motif": motif}, "responded_by_user": {"id": user, "name": name}}


def _signed_by_the_mayor(settings: Settings, numero: str) -> tuple[str, ArtefactStore]:
    """A Saint-Sever délibération through its one-step circuit, signed as configured."""
    dossier_id = _dossier(settings, "saint-sever", "DE", numero, matiere="5.2")
    steps.parapheur_request(settings, dossier_id, step=1)
    steps.record_decision(settings, dossier_id, _answer(steps.APPROVE, "maire.saintsever", "Claire Dupré"), step=1)
    assert steps.sign(settings, dossier_id).state == "signe"
    return dossier_id, ArtefactStore(settings.store_root)


def _journal(settings: Settings, dossier_id: str) -> list:
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        return [(e.event, e.actor, e.message, e.details) for e in d.journal]


def test_two_visas_then_the_signature(settings):
    dossier_id = _dossier(settings, "cc-chalosse-tursan", "CC", "CTR2026_01")
    expected = [(1, "VISA", "dgs.chalosse", "Marc DGS"), (2, "VISA", "finances.chalosse", "Anne Finances"),
                (3, "SIGNATURE", "president.chalosse", "Jean Labadie")]
    for step, kind, user, name in expected:
        req = steps.parapheur_request(settings, dossier_id, step=step, operators=["operateur"])
        assert req.action == "ask" and req.step_kind == kind and req.steps == 3
        assert [u["id"] for u in req.assigned_users] == [user, "operateur"]  # the step's respondent, then operators
        assert f"({step}/3)" in req.subject
        assert not steps.sign(settings, dossier_id).proceed  # never signed before the circuit's end
        outcome = steps.record_decision(settings, dossier_id, _answer(steps.APPROVE, user, name), step=step)
        assert outcome.action == "approved" and outcome.last == (step == 3)
    assert steps.sign(settings, dossier_id).state == "signe"
    entries = _journal(settings, dossier_id)
    approvals = [(a, m) for e, a, m, _ in entries if e == "approbation"]
    assert approvals == [("Marc DGS", "Visa accordé par Marc DGS (étape 1/3)."),
                         ("Anne Finances", "Visa accordé par Anne Finances (étape 2/3)."),
                         ("Jean Labadie", "Signature accordée par Jean Labadie (étape 3/3).")]
    waits = [m for e, _, m, _ in entries if e in ("au_parapheur", "parapheur_etape")]
    assert waits[0].startswith("Soumis au parapheur. Étape 1/3 du parapheur (visa) : en attente de dgs.chalosse")
    assert "Étape 3/3 du parapheur (signature) : en attente de Jean Labadie (Président)" in waits[2]
    signed = [(a, m) for e, a, m, _ in entries if e == "signe"]
    assert signed and signed[0][0] == "Jean Labadie"  # the signer, not the last visa
    with session_scope(settings.database_url) as s:
        assert verify_chain(s).ok


def test_a_retry_asks_once_and_records_once(settings):
    dossier_id = _dossier(settings, "cc-chalosse-tursan", "CC", "CTR2026_02")
    for _ in range(2):  # the task is retried after a crash: same step asked again
        assert steps.parapheur_request(settings, dossier_id, step=1).action == "ask"
    answer = _answer(steps.APPROVE, "dgs.chalosse", "Marc DGS")
    assert steps.record_decision(settings, dossier_id, answer, step=1).action == "approved"
    assert steps.record_decision(settings, dossier_id, answer, step=1).action == "approved"
    # after the decision a retried step 1 does not ask again: it moves on
    assert steps.parapheur_request(settings, dossier_id, step=1).action == "approved"
    events = [e for e, *_ in _journal(settings, dossier_id)]
    assert events.count("approbation") == 1 and events.count("au_parapheur") == 1


def test_rejection_at_the_second_visa_stops_the_dossier_with_who_and_why(settings):
    dossier_id = _dossier(settings, "cc-chalosse-tursan", "CC", "CTR2026_03")
    steps.parapheur_request(settings, dossier_id, step=1)
    steps.record_decision(settings, dossier_id, _answer(steps.APPROVE, "dgs.chalosse", "Marc DGS"), step=1)
    steps.parapheur_request(settings, dossier_id, step=2)
    out = steps.record_decision(settings, dossier_id, _answer(steps.REJECT, "finances.chalosse", "Anne Finances",
                                                              "Crédits insuffisants au chapitre 011"), step=2)
    assert out.action == "stop"
    assert steps.parapheur_request(settings, dossier_id, step=3).action == "stop"
    assert not steps.sign(settings, dossier_id).proceed
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        assert d.state == "rejete_parapheur"
        assert d.reason == ("Rejeté au parapheur par Anne Finances à l'étape 2/3 (visa) : "
                            "Crédits insuffisants au chapitre 011.")


def test_a_step_past_its_deadline_ends_in_the_named_error_state(settings):
    dossier_id = _dossier(settings, "cc-chalosse-tursan", "CC", "CTR2026_04")
    steps.parapheur_request(settings, dossier_id, step=1)
    steps.record_decision(settings, dossier_id, _answer(steps.APPROVE, "dgs.chalosse", "Marc DGS"), step=1)
    req = steps.parapheur_request(settings, dossier_id, step=2)
    assert req.deadline_days == 10  # from the circuit, not the 30-day default
    assert steps.parapheur_expired(settings, dossier_id, deadline_days=10, step=2).state == "parapheur_expire"
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        assert d.state == "parapheur_expire"
        assert "étape 2" in d.reason and "10 jour(s)" in d.reason


def test_other_document_types_keep_the_single_signature(settings):
    dossier_id = _dossier(settings, "cc-chalosse-tursan", "DE", "DEL2026_05", matiere="5.2")
    req = steps.parapheur_request(settings, dossier_id, step=1)
    assert req.action == "ask" and req.step_kind == "SIGNATURE" and req.last


def test_acte_signed_with_a_detached_xades_sent_as_99_se(settings):
    from flows.signature.detached import verify_detached

    dossier_id, store = _signed_by_the_mayor(settings, "DEL2026_06")
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        sig = store.get(service.artefact(d, "signature").sha256)
        signed_msg = next(e.message for e in d.journal if e.event == "signe")
    _, pdf = steps._acte_document(store, d, settings)
    result = verify_detached(pdf, sig, [settings.pki_dir / "ca.pem"], strict=True)
    assert result.ok, [f.message for f in result.findings]
    assert "Claire Dupré, Maire" in signed_msg and "99_SE" in signed_msg
    name, sha = steps.prepare_transmission(settings, dossier_id)
    with tarfile.open(fileobj=io.BytesIO(store.get(sha)), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    se = [n for n in members if n.startswith("99_SE-")]
    assert len(se) == 1 and members[se[0]] == sig
    message = next(v for n, v in members.items() if n.endswith("-1-1_0.xml"))
    assert se[0].encode() in message  # listed as an annexe of the acte message


def test_automatic_circuit_signs_without_anyone(settings, tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["collectivites"][1]["circuits"]["contrat"] = [{"kind": "AUTO"}]
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    auto = dataclasses.replace(settings, config_path=path)
    dossier_id = _dossier(auto, "cc-chalosse-tursan", "CC", "CTR2026_07")
    req = steps.parapheur_request(auto, dossier_id, step=1)
    assert req.action == "approved" and req.last  # the DAG branches straight to the signature
    assert steps.sign(auto, dossier_id).state == "signe"
    assert [e for e, *_ in _journal(auto, dossier_id)] == ["reception", "valide", "signe"]


def test_automatic_step_naming_an_official_signs_with_its_certificate(settings, tmp_path):
    """A circuit without anyone (a server seal): AUTO with `official` signs as that official's certificate."""
    from flows.signature.detached import verify_detached

    data = yaml.safe_load(DEMO.read_text())
    data["collectivites"][0]["circuits"]["acte"] = [{"kind": "AUTO", "official": "maire"}]
    path = tmp_path / "auto-seal.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    auto = dataclasses.replace(settings, config_path=path)
    dossier_id = _dossier(auto, "saint-sever", "DE", "DEL2026_09")
    req = steps.parapheur_request(auto, dossier_id, step=1)
    assert req.action == "approved" and req.last
    assert steps.sign(auto, dossier_id).state == "signe"
    store = ArtefactStore(auto.store_root)
    with session_scope(auto.database_url) as s:
        d = service.get(s, dossier_id)
        sig = store.get(service.artefact(d, "signature").sha256)
        signed = next(e for e in d.journal if e.event == "signe")
    _, pdf = steps._acte_document(store, d, auto)
    assert verify_detached(pdf, sig, [auto.pki_dir / "ca.pem"], strict=True).ok
    assert "sans intervention" in signed.message and "Claire Dupré, Maire" in signed.message
    assert signed.details["automatique"] is True and signed.actor == "demat"


@pytest.mark.parametrize("circuit, message", [
    ([{"kind": "VISA", "users": [f"u{i}"]} for i in range(6)], "6 étapes de visa ou de signature, au plus 5"),
    ([{"kind": "SIGNATURE", "official": "president"}] * 2, "une seule étape SIGNATURE par circuit"),
    ([{"kind": "VISA"}], "une étape VISA doit nommer au moins un utilisateur"),
    ([{"kind": "SIGNATURE", "official": "inconnu"}], "l'élu « inconnu » n'est pas déclaré"),
    ([{"kind": "VISA", "users": ["x"], "deadline_days": 0}], "deadline_days"),
])
def test_bad_circuits_are_refused_on_load_with_the_field_named(tmp_path, circuit, message):
    data = yaml.safe_load(DEMO.read_text())
    data["collectivites"][1]["circuits"]["contrat"] = circuit
    path = Path(tmp_path / "bad.yaml")
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value) and "collectivites > 1" in str(exc.value)


def _openssl_verifies_pades(pdf: bytes, ca: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Verify a PAdES signature with OpenSSL alone (an independent verifier): the CMS in /Contents
    must cover exactly the /ByteRange of the file and chain to the demo CA."""
    a, b, c, d = map(int, re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf).groups())
    der = bytes.fromhex(pdf[a + b:c].strip(b"<>").decode())
    n = der[1] & 0x7F if der[1] & 0x80 else 0  # DER length header: the zero padding after it is not the CMS
    size = 2 + n + (int.from_bytes(der[2:2 + n], "big") if n else der[1])
    (tmp_path / "sig.der").write_bytes(der[:size])
    (tmp_path / "content.bin").write_bytes(pdf[a:a + b] + pdf[c:c + d])
    return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
                           "-content", str(tmp_path / "content.bin"), "-CAfile", str(ca), "-purpose", "any",
                           "-out", os.devnull], capture_output=True, text=True)


def test_acte_signed_pades_inside_the_pdf_and_accepted_by_the_prefecture(settings, tmp_path):
    from simulators import actes_wire
    from simulators.prefecture import acte_problems

    data = yaml.safe_load(DEMO.read_text())
    data["collectivites"][0]["acte_signature"] = "pades"
    path = tmp_path / "pades.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    pades = dataclasses.replace(settings, config_path=path)
    dossier_id, store = _signed_by_the_mayor(pades, "DEL2026_08")
    with session_scope(pades.database_url) as s:
        d = service.get(s, dossier_id)
        signed = store.get(service.artefact(d, "signed").sha256)
        assert service.artefact(d, "signature") is None  # nothing detached: the PDF carries it
    _, original = steps._acte_document(store, d, pades)
    assert signed.startswith(original)  # an incremental update: the agent's bytes are untouched
    verified = _openssl_verifies_pades(signed, pades.pki_dir / "ca.pem", tmp_path)
    assert verified.returncode == 0, verified.stderr
    tampered = signed.replace(b"/Type /Catalog", b"/Type /Catalof", 1)  # one byte of the signed range
    assert _openssl_verifies_pades(tampered, pades.pki_dir / "ca.pem", tmp_path).returncode != 0

    name, sha = steps.prepare_transmission(pades, dossier_id)
    received = actes_wire.read_received(name, store.get(sha))
    acte = next(v for n, v in received.files.items() if n.endswith("-1-1_1.pdf"))
    assert acte == signed  # the signed PDF is what leaves, as the acte itself
    assert acte_problems(received, datetime.now(UTC).date(), None) == []
