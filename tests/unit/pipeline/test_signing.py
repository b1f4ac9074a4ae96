"""The official signs on their own SoftHSM2 token through the platform (flows.pipeline.signing).

Real PostgreSQL, real SoftHSM2 tokens (key generated on the token), the real business API app
(demat_airflow.ui.api with its /signatures routes) served by uvicorn on loopback, and
`demat-signer` as a subprocess. Airflow is not started: the caller's identity (Airflow's JWT
check) is a fake token table and the HITL answer demat sends after a completed signature is
recorded instead of sent; everything else is the real code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import signing, steps
from flows.settings import REPO, Settings
from flows.signature import token as tok
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.skipif(shutil.which("softhsm2-util") is None or not Path(tok.default_module()).exists(),
                       reason="SoftHSM2 absent : installez le paquet Debian softhsm2"),
]
XMLSEC1 = shutil.which("xmlsec1")
_SCRIPT = Path(sys.executable).with_name("demat-signer")
AGENT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "signer_agent"]
ID_ATTRS = ["--id-attr:Id", "Bordereau", "--id-attr:Id", "http://uri.etsi.org/01903/v1.1.1#:SignedProperties",
            "--id-attr:Id", "http://www.w3.org/2000/09/xmldsig#:Signature"]
TOKENS = {"t-maire": "maire.saintsever", "t-president": "president.chalosse", "t-agent": "agent.saintsever"}


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    """The embedded platform's supports (signing.provision_demo_supports): one SoftHSM2 token per demo
    official and one for the server seal in <state>/softhsm; an older state's PKCS#12 files are removed."""
    from flows.config import load_config
    from flows.signature.pki import create_demo_pki

    state = tmp_path_factory.mktemp("state")
    create_demo_pki(state / "pki", [("maire-saint-sever", "Claire Dupré", "Maire")], ca_key_size=2048)
    assert (state / "pki" / "maire-saint-sever.p12").exists()  # an older state: the mayor's key on the server
    out = signing.provision_demo_supports(state, state / "pki", load_config(REPO / "flows" / "config" / "demo.yaml"),
                                          seal_holder="Syndicat mixte de test")
    assert out is not None
    # no official's key with its password remains; the demo CA's own (encrypted) key stays, as any CA's
    assert not list((state / "pki").glob("*.p12")) and [p.name for p in (state / "pki").glob("*.pass")] == ["ca.pass"]
    out["officials"] = {"maire": out["officials"]["maire-saint-sever"],
                        "president": out["officials"]["president-chalosse-tursan"]}
    out["state"] = state
    yield out
    tok.reset()


@pytest.fixture
def settings(hsm, demat_db, tmp_path) -> Settings:
    """The demo configuration with Saint-Sever's actes in PAdES; the state holds tokens, no PKCS#12."""
    data = yaml.safe_load((REPO / "flows" / "config" / "demo.yaml").read_text())
    data["collectivites"][0]["acte_signature"] = "pades"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    state = hsm["state"]
    s = Settings(state_dir=state, config_path=path, database_url=demat_db, store_root=str(tmp_path / "store"),
                 inbox_root=tmp_path / "inbox", pki_dir=state / "pki", reference_dir=tmp_path)
    assert not list(s.pki_dir.glob("*.p12"))  # no official's private key on the platform
    return s


@pytest.fixture
def platform(settings, monkeypatch):
    """The business API (with its /signatures routes) on loopback; HITL answers recorded."""
    import uvicorn

    from demat_airflow import context
    from demat_airflow.ui import api, signatures
    from demat_airflow.ui.security import Caller

    async def resolve(request, credentials):
        user = TOKENS.get(credentials.credentials if credentials else "")
        return Caller(user, user, "user", "x", frozenset()) if user else None

    answered: list[tuple] = []
    monkeypatch.setattr(context, "settings", lambda: settings)
    monkeypatch.setattr(api, "resolve_caller", resolve)
    monkeypatch.setattr(signatures, "answer_hitl", lambda *a: answered.append(a) or True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from fastapi import FastAPI

    root = FastAPI()
    root.mount("/demat/api/v1", api.create_api())  # where the plugin serves it (create_app under /demat)
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/", "answered": answered}
    server.should_exit = True
    thread.join(10)


def _pin(hsm, official: str) -> str:
    return Path(hsm["officials"][official]["pin_file"]).read_text().strip()


def _agent(args: list[str], hsm: dict, *, token: str | None = "t-maire", stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, SOFTHSM2_CONF=hsm["conf"], PYTHONPATH=str(ROOT))
    env.pop("DEMAT_API_TOKEN", None)
    if token:
        env["DEMAT_API_TOKEN"] = token
    return subprocess.run([*AGENT, *args], input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=180)


def _at_signature(settings: Settings, dossier_id: str) -> str:
    assert steps.validate(settings, dossier_id).state == "valide"
    req = steps.parapheur_request(settings, dossier_id, step=1)
    assert req.action == "ask" and req.step_kind == "SIGNATURE"
    return dossier_id


def _pes(settings: Settings, n: int, *, slug: str = "saint-sever", bordereaux: int = 5) -> str:
    from flows.helios.generate import generate_pes

    coll = settings.config.collectivite(slug)
    data = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                        codbud=coll.helios.codbud, nomfic=f"PESALR2_SIG{n}", n_bordereaux=bordereaux, seed=40 + n)
    for b in range(bordereaux, 0, -1):  # each file of the year numbers its bordereaux on from the earlier ones
        data = data.replace(f'<IdBord V="{b}"/>'.encode(), f'<IdBord V="{n * 10 + b}"/>'.encode())
    sha = ArtefactStore(settings.store_root).put(data)
    with session_scope(settings.database_url) as s:
        dossier_id = service.create(s, collectivite=slug, flow="helios", original_name=f"PESALR2_SIG{n}.xml",
                                    sha256=sha, size=len(data)).id
    return _at_signature(settings, dossier_id)


def _acte(settings: Settings, numero: str, *, slug: str = "saint-sever", nature: str = "DE") -> str:
    from flows.actes.generate import generate_acte_zip

    coll = settings.config.collectivite(slug)
    data = generate_acte_zip(collectivite=coll, numero=numero, nature=nature, matiere="5.2" if nature == "DE" else "1.1",
                             objet=f"Acte {numero} : budget")
    sha = ArtefactStore(settings.store_root).put(data)
    with session_scope(settings.database_url) as s:
        dossier_id = service.create(s, collectivite=slug, flow="actes", original_name=f"{numero}.zip", sha256=sha,
                                    size=len(data)).id
    if nature != "DE":
        assert steps.validate(settings, dossier_id).state == "valide"
        assert steps.parapheur_request(settings, dossier_id, step=1).step_kind == "VISA"
        return dossier_id
    return _at_signature(settings, dossier_id)


def _dossier(settings: Settings, dossier_id: str):
    with session_scope(settings.database_url) as s:
        return service.get(s, dossier_id)


def _events(settings: Settings, dossier_id: str) -> list[str]:
    return [e.event for e in _dossier(settings, dossier_id).journal]


def _offline_sign(hsm, batch: dict, tmp_path: Path, official: str = "maire") -> dict:
    (tmp_path / "lot.json").write_text(json.dumps(batch))
    res = _agent(["sign", "--prepared", str(tmp_path / "lot.json"), "--token-label", hsm["officials"][official]["label"],
                  "--pin-stdin", "--out", str(tmp_path / "sigs.json")], hsm, token=None,
                 stdin=_pin(hsm, official) + "\n")
    assert res.returncode == 0, res.stderr
    return json.loads((tmp_path / "sigs.json").read_text())


def _certificate(hsm, official: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(Path(hsm["officials"][official]["certificate"]).read_bytes())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def test_official_signs_15_bordereaux_and_2_actes_with_one_pin_through_the_platform(settings, hsm, platform, tmp_path):
    from flows.signature.verify import verify_pes
    from tests.unit.signature.test_remote import pades_check

    pes = [_pes(settings, n) for n in range(3)]
    actes = [_acte(settings, f"DEL2026_S{n}") for n in range(2)]
    assert signing.on_token(settings, settings.config.collectivite("saint-sever"), _dossier(settings, pes[0]))
    assert not steps.sign(settings, pes[1]).proceed  # nothing decided yet
    # an "Approuver" (Airflow's own HITL form, say) is not a signature: sign() signs nothing and waits
    steps.record_decision(settings, pes[0], {"chosen_options": [steps.APPROVE],
                                             "responded_by_user": {"id": "maire.saintsever", "name": "Claire Dupré"}})
    assert not steps.sign(settings, pes[0]).proceed
    assert "signature sur le support de Claire Dupré" in _dossier(settings, pes[0]).waiting_reason
    assert service.artefact(_dossier(settings, pes[0]), "signed") is None
    url = platform["url"]
    listed = _agent(["list", "--url", url], hsm)
    assert listed.returncode == 0, listed.stderr
    assert all(d in listed.stdout for d in pes + actes) and "5 bordereau(x)" in listed.stdout
    assert "Commune de Saint-Sever" in listed.stdout
    shown = _agent(["show", actes[0], "--url", url, "--document", str(tmp_path / "acte.pdf")], hsm)
    assert shown.returncode == 0 and (tmp_path / "acte.pdf").read_bytes().startswith(b"%PDF")
    pin = _pin(hsm, "maire")
    res = _agent(["sign", "--url", url, "--token-label", hsm["officials"]["maire"]["label"], "--pin-stdin"], hsm,
                 stdin=pin + "\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "17 élément(s) à signer pour Claire Dupré" in res.stdout  # 15 bordereaux + 2 PDF, one PIN entry
    assert sorted(line.split(": ")[1] for line in res.stdout.splitlines() if line.startswith("Signé : ")) == sorted(pes + actes)
    assert pin not in res.stdout + res.stderr
    # demat answered each SIGNATURE step's HITL (after the response), as the official, approving
    assert sorted(a[1] for a in platform["answered"]) == sorted(pes + actes)
    assert all(a[0] == "maire.saintsever" and a[2] == 1 and a[3] == steps.APPROVE for a in platform["answered"])
    assert signing.pending_for(settings, "maire.saintsever") == []
    store = ArtefactStore(settings.store_root)
    ca = str(settings.pki_dir / "ca.pem")
    for d in pes + actes:
        # the run moves on: the operator's record_decision finds the decision, sign() uses the token's document
        assert steps.record_decision(settings, d, {"chosen_options": [steps.APPROVE], "responded_by_user":
                                                   {"id": "demat-service", "name": "Claire Dupré"}}, step=1).last
        out = steps.sign(settings, d)
        assert out.state == "signe", out.message
        dossier = _dossier(settings, d)
        signed = store.get(service.artefact(dossier, "signed").sha256)
        if dossier.flow == "helios":
            report = verify_pes(signed, trust_store=[ca], strict=True)
            assert report.ok and len(report.results) == 5, report.to_text()
            assert {r.signer for r in report.results} == {"Claire Dupré"}
            if XMLSEC1:
                (tmp_path / "pes.xml").write_bytes(signed)
                for r in report.results:
                    x = subprocess.run([XMLSEC1, "--verify", *ID_ATTRS, "--trusted-pem", ca, "--node-id",
                                        f"{r.bordereau_id}_SIG_1", str(tmp_path / "pes.xml")],
                                       capture_output=True, text=True, timeout=60)
                    assert x.returncode == 0, x.stderr
            name, sha = steps.prepare_transmission(settings, d)
            assert store.get(sha) == signed  # what leaves for Hélios is what the official signed
        else:
            pades_check(signed, ca, tmp_path)
        signe = next(e for e in dossier.journal if e.event == "signe")
        assert "sur le support de Claire Dupré" in signe.message and signe.details["support"] is True
        assert [e.event for e in dossier.journal].count("signature_support") == 1
        approval = next(e for e in dossier.journal if e.event == "approbation")
        assert approval.actor == "Claire Dupré"


def test_another_official_or_collectivite_sees_nothing_and_a_wrong_certificate_is_refused(settings, hsm, platform):
    d = _pes(settings, 5, bordereaux=2)
    other = _pes(settings, 6, slug="cc-chalosse-tursan", bordereaux=1)
    url = platform["url"]
    # the president of another collectivité: nothing of Saint-Sever, and its dossier is 404 for him
    res = _agent(["list", "--url", url], hsm, token="t-president")
    assert res.returncode == 0 and d not in res.stdout and other in res.stdout
    res = _agent(["show", d, "--url", url], hsm, token="t-president")
    assert res.returncode == 1 and "404" in res.stderr and "introuvable" in res.stderr
    res = _agent(["sign", "--url", url, "--ids", d, "--token-label", hsm["officials"]["president"]["label"],
                  "--pin-stdin"], hsm, token="t-president", stdin=_pin(hsm, "president") + "\n")
    assert res.returncode == 1 and "404" in res.stderr
    # an agent of the collectivité is no official: nothing waits for them
    assert signing.pending_for(settings, "agent.saintsever") == []
    with pytest.raises(signing.SigningError) as exc:
        signing.document(settings, "agent.saintsever", d)
    assert exc.value.status == 404
    # the mayor's account with the president's token: refused before the PIN, with the reason
    res = _agent(["sign", "--url", url, "--ids", d, "--token-label", hsm["officials"]["president"]["label"],
                  "--pin-stdin"], hsm, token="t-maire", stdin="")
    assert res.returncode == 1 and "422" in res.stderr, res.stderr
    assert "pas celui de « Claire Dupré »" in res.stderr and "Branchez le support" in res.stderr
    # a wrong PIN: exit 3, French, nothing signed, the step still waits and the token is not locked
    wrong = "00000000" if _pin(hsm, "maire") != "00000000" else "11111111"
    res = _agent(["sign", "--url", url, "--ids", d, "--token-label", hsm["officials"]["maire"]["label"], "--pin-stdin"],
                 hsm, stdin=wrong + "\n")
    assert res.returncode == 3 and "Code PIN incorrect" in res.stderr and wrong not in res.stdout + res.stderr
    assert [i["id"] for i in signing.pending_for(settings, "maire.saintsever")] == [d]
    assert service.artefact(_dossier(settings, d), "signed") is None and platform["answered"] == []
    # a registered certificate (SHA-256) that is not the token's: refused even with the right name
    data = yaml.safe_load(settings.config_path.read_text())
    data["collectivites"][0]["officials"][0]["cert_sha256"] = "ab" * 32
    path = settings.config_path.with_name("registered.yaml")
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    registered = dataclasses.replace(settings, config_path=path)
    with pytest.raises(signing.SigningError) as exc:
        signing.prepare_batch(registered, "maire.saintsever", [d], _certificate(hsm, "maire"))
    assert exc.value.status == 422 and "n'est pas celui enregistré" in exc.value.erreur
    # hostile inputs: not a certificate, not a list, unknown batch, wrong format
    for bad in ("pas du base64 !", base64.b64encode(b"\x30\x03\x02\x01\x01").decode()):
        with pytest.raises(signing.SigningError) as exc:
            signing.prepare_batch(settings, "maire.saintsever", [d], bad)
        assert exc.value.status == 400
    with pytest.raises(signing.SigningError) as exc:
        signing.apply_batch(settings, "maire.saintsever", "lot-0000000000000000",
                            {"format": "demat-signatures/1", "signatures": {}})
    assert exc.value.status == 404
    with pytest.raises(signing.SigningError):
        signing.apply_batch(settings, "maire.saintsever", "lot-x", {"format": "autre"})


def test_restart_between_prepare_and_post_repost_applied_once(settings, hsm, tmp_path):
    d = _pes(settings, 7, bordereaux=3)
    batch = signing.prepare_batch(settings, "maire.saintsever", [d], _certificate(hsm, "maire"))
    assert len(batch["items"]) == 3 and batch["signer"] == "Claire Dupré"
    answer = _offline_sign(hsm, batch, tmp_path)
    # the platform restarted: a new process, nothing in memory, everything from the database
    code = ("import json,sys; from pathlib import Path; from flows.settings import Settings; "
            "from flows.pipeline import signing; a=json.loads(sys.argv[1]); "
            "s=Settings(state_dir=Path(a['state']), config_path=Path(a['config']), database_url=a['db'], "
            "store_root=a['store'], inbox_root=Path(a['inbox']), pki_dir=Path(a['pki']), reference_dir=None); "
            "print(json.dumps(signing.apply_batch(s, 'maire.saintsever', a['lot'], a['answer']).to_dict()))")
    arg = json.dumps({"state": str(settings.state_dir), "config": str(settings.config_path), "db": settings.database_url,
                      "store": settings.store_root, "inbox": str(settings.inbox_root), "pki": str(settings.pki_dir),
                      "lot": batch["batch_id"], "answer": answer})
    res = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), SOFTHSM2_CONF=hsm["conf"]))
    assert res.returncode == 0, res.stderr
    first = json.loads(res.stdout.strip().splitlines()[-1])
    assert first["signed"] == [d] and not first["refused"] and not first["waiting"]
    dossier = _dossier(settings, d)
    signed_sha = service.artefact(dossier, "signed").sha256
    # posted again: the same document, no second artefact, no second journal entry or decision
    again = signing.apply_batch(settings, "maire.saintsever", batch["batch_id"], answer)
    assert again.signed == [d] and not again.refused
    dossier = _dossier(settings, d)
    assert [a.sha256 for a in dossier.artefacts if a.kind == "signed"] == [signed_sha]
    events = [e.event for e in dossier.journal]
    assert events.count("signature_support") == 1 and events.count("approbation") == 1
    assert steps.sign(settings, d).state == "signe"
    # once signed, another batch for it is refused (404: it no longer waits)
    with pytest.raises(signing.SigningError) as exc:
        signing.prepare_batch(settings, "maire.saintsever", [d], _certificate(hsm, "maire"))
    assert exc.value.status == 404


def test_a_bad_value_is_refused_and_a_removed_token_keeps_what_was_signed(settings, hsm, tmp_path):
    d = _pes(settings, 8, bordereaux=3)
    batch = signing.prepare_batch(settings, "maire.saintsever", [d], _certificate(hsm, "maire"))
    answer = _offline_sign(hsm, batch, tmp_path)
    items = sorted(answer["signatures"])
    # a value that does not verify: refused with the bordereau named, nothing attached, the step waits
    forged = dict(answer, signatures=dict(answer["signatures"]))
    raw = bytearray(base64.b64decode(forged["signatures"][items[0]]))
    raw[10] ^= 0x01
    forged["signatures"][items[0]] = base64.b64encode(bytes(raw)).decode()
    out = signing.apply_batch(settings, "maire.saintsever", batch["batch_id"], forged)
    assert out.signed == [] and items[0] in out.refused and "ne correspond pas" in out.refused[items[0]]
    assert out.waiting == {d: [items[0].split("/")[1]]}  # the two good values are kept
    assert service.artefact(_dossier(settings, d), "signed") is None
    assert [i["id"] for i in signing.pending_for(settings, "maire.saintsever")] == [d]
    assert not steps.sign(settings, d).proceed
    # the token removed after the first bordereau: kept, the rest waits; the rest posted later completes it
    partial = dict(answer, signatures={items[0]: answer["signatures"][items[0]]}, failed={items[1]: "support retiré"})
    out = signing.apply_batch(settings, "maire.saintsever", batch["batch_id"], partial)
    assert out.signed == [d] and not out.refused  # the other two were kept from the previous post
    assert steps.sign(settings, d).state == "signe"


def test_partial_batch_waits_then_completes(settings, hsm, tmp_path):
    d = _pes(settings, 9, bordereaux=3)
    batch = signing.prepare_batch(settings, "maire.saintsever", [d], _certificate(hsm, "maire"))
    answer = _offline_sign(hsm, batch, tmp_path)
    items = sorted(answer["signatures"])
    first = signing.apply_batch(settings, "maire.saintsever", batch["batch_id"],
                                dict(answer, signatures={items[0]: answer["signatures"][items[0]]}))
    assert first.signed == [] and len(first.waiting[d]) == 2
    assert "2 élément(s) restent à signer" in _dossier(settings, d).waiting_reason
    rest = signing.apply_batch(settings, "maire.saintsever", batch["batch_id"],
                               dict(answer, signatures={k: answer["signatures"][k] for k in items[1:]}))
    assert rest.signed == [d] and rest.completed == [(d, 1)]


def test_reject_with_a_motive_through_the_agent(settings, hsm, platform):
    d = _acte(settings, "DEL2026_R1")
    res = _agent(["reject", d, "--url", platform["url"], "--motif", "  "], hsm)
    assert res.returncode != 0
    res = _agent(["reject", d, "--url", platform["url"], "--motif", "Montant erroné à l'article 2"], hsm)
    assert res.returncode == 0, res.stderr
    dossier = _dossier(settings, d)
    assert dossier.state == "rejete_parapheur" and "Montant erroné à l'article 2" in dossier.reason
    assert "Claire Dupré" in dossier.reason
    assert platform["answered"] == [("maire.saintsever", d, 1, steps.REJECT, "Montant erroné à l'article 2")]
    res = _agent(["reject", d, "--url", platform["url"], "--motif", "encore"], hsm)
    assert res.returncode == 1 and "404" in res.stderr


def test_server_seal_signs_an_automatic_circuit_from_the_hsm(settings, hsm, tmp_path, monkeypatch):
    from flows.signature.verify import verify_pes

    data = yaml.safe_load(settings.config_path.read_text())
    data["collectivites"][0]["circuits"]["pes"] = [{"kind": "AUTO"}]
    data["collectivites"][0]["circuits"]["acte"] = [{"kind": "SIGNATURE", "official": "maire"}]
    data["collectivites"][0]["cachet_serveur"] = True
    path = tmp_path / "seal.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    auto = dataclasses.replace(settings, config_path=path)
    from flows.helios.generate import generate_pes

    coll = auto.config.collectivite("saint-sever")
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic="PESALR2_SEAL", n_bordereaux=2, seed=77)
    sha = ArtefactStore(auto.store_root).put(pes)
    with session_scope(auto.database_url) as s:
        d = service.create(s, collectivite="saint-sever", flow="helios", original_name="PESALR2_SEAL.xml",
                           sha256=sha, size=len(pes)).id
    assert steps.validate(auto, d).state == "valide" and not steps.has_parapheur(auto, d)
    assert steps.sign(auto, d).state == "signe"
    dossier = _dossier(auto, d)
    signed = ArtefactStore(auto.store_root).get(service.artefact(dossier, "signed").sha256)
    report = verify_pes(signed, trust_store=[auto.pki_dir / "ca.pem"], strict=True)
    assert report.ok and {r.signer for r in report.results} == {"Cachet serveur — Syndicat mixte de test"}
    signe = next(e for e in dossier.journal if e.event == "signe")
    assert "Cachet serveur « Cachet serveur — Syndicat mixte de test » apposé sur 2 bordereau(x)" in signe.message
    assert signe.details["cachet"]["token_label"] == "demat-cachet-serveur"
    assert signe.details["cachet"]["certificate_sha256"] != hsm["officials"]["maire"]["cert_sha256"]
    # cachet_serveur: the SIGNATURE step is an approval (not on the token), then the seal signs the acte
    acte = _acte(auto, "DEL2026_C1")
    assert not signing.on_token(auto, coll, _dossier(auto, acte)) and signing.pending_for(auto, "maire.saintsever") == []
    steps.record_decision(auto, acte, {"chosen_options": [steps.APPROVE],
                                       "responded_by_user": {"id": "maire.saintsever", "name": "Claire Dupré"}}, step=1)
    assert steps.sign(auto, acte).state == "signe"
    signe = next(e for e in _dossier(auto, acte).journal if e.event == "signe")
    assert "après l'approbation de Claire Dupré" in signe.message and signe.details["cachet"]["kind"] == "pdf"
    # a seal PIN file readable by others is refused: the seal is not used
    pin_file = hsm["state"] / "softhsm" / "cachet-serveur.pin"
    os.chmod(pin_file, 0o644)
    try:
        with pytest.raises(signing.SigningError) as exc:
            signing.seal_config(auto)
        assert "lisible par d'autres" in exc.value.erreur and "chmod 600" in exc.value.correction
    finally:
        os.chmod(pin_file, stat.S_IRUSR | stat.S_IWUSR)


def test_demo_supports_tell_each_official_their_token_and_the_page_how_to_sign(settings, hsm):
    tokens = json.loads((hsm["state"] / "softhsm" / "tokens.json").read_text())
    assert stat.S_IMODE((hsm["state"] / "softhsm" / "tokens.json").stat().st_mode) == 0o600
    maire = tokens["users"]["maire.saintsever"]
    assert maire["label"] == "demat-maire-saint-sever" and maire["official"] == "Claire Dupré"
    assert stat.S_IMODE(Path(maire["pin_file"]).stat().st_mode) == 0o600
    assert _pin(hsm, "maire") not in (hsm["state"] / "softhsm" / "tokens.json").read_text()
    assert hsm["seal"]["label"] == "demat-cachet-serveur" and "Cachet serveur" in hsm["seal"]["name"]
    d = _acte(settings, "DEL2026_P1")
    how = signing.awaiting_token(settings, _dossier(settings, d), 1)
    assert how["signataire"] == "Claire Dupré (Maire)" and "--token-label demat-maire-saint-sever" in how["commande"]
    assert signing.awaiting_token(settings, _dossier(settings, d), 2) is None
    # a VISA step stays approvable in the page
    contrat = _acte(settings, "CTR2026_P1", slug="cc-chalosse-tursan", nature="CC")
    assert signing.awaiting_token(settings, _dossier(settings, contrat), 1) is None


def test_a_revoked_certificate_is_refused_with_the_crl_refreshed_nightly(settings, hsm, tmp_path):
    from datetime import UTC, datetime, timedelta
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from flows.signature.pki import _load_ca

    key, ca = _load_ca(settings.pki_dir)
    maire = x509.load_pem_x509_certificate(Path(hsm["officials"]["maire"]["certificate"]).read_bytes())
    now = datetime.now(UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(now - timedelta(hours=1))
           .next_update(now + timedelta(days=7))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(maire.serial_number)
                                    .revocation_date(now - timedelta(minutes=5)).build())
           .sign(key, hashes.SHA256()))
    served = {"body": crl.public_bytes(serialization.Encoding.DER)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(served["body"])))
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = yaml.safe_load(settings.config_path.read_text())
        data["signature"] = {"crls": ["crl/demo.crl"],
                             "crl_urls": {"crl/demo.crl": f"http://127.0.0.1:{server.server_address[1]}/demo.crl"}}
        path = tmp_path / "crl.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        with_crl = dataclasses.replace(settings, config_path=path)
        d = _pes(with_crl, 11, bordereaux=1)
        # before the nightly refresh there is no CRL file yet: the certificate is accepted
        assert "crl/demo.crl" not in str(signing.trust_config(with_crl).crls)
        assert "mise à jour" in signing.refresh_crls(with_crl)["crl/demo.crl"]
        with pytest.raises(signing.SigningError) as exc:
            signing.prepare_batch(with_crl, "maire.saintsever", [d], _certificate(hsm, "maire"))
        assert exc.value.status == 422 and "révoqué" in exc.value.erreur and "Claire Dupré" in exc.value.erreur
        assert [i["id"] for i in signing.pending_for(with_crl, "maire.saintsever")] == [d]  # nothing prepared
        # a broken distribution point keeps the last good list
        served["body"] = b"<html>maintenance</html>"
        before = (with_crl.state_dir / "crl" / "demo.crl").read_bytes()
        assert "n'est pas une CRL" in signing.refresh_crls(with_crl)["crl/demo.crl"]
        assert (with_crl.state_dir / "crl" / "demo.crl").read_bytes() == before
        with pytest.raises(signing.SigningError):
            signing.prepare_batch(with_crl, "maire.saintsever", [d], _certificate(hsm, "maire"))
    finally:
        server.shutdown()
        server.server_close()


def test_expiry_alerts_read_token_certificates_from_the_batches_and_the_hsm(settings, hsm):
    from datetime import datetime, timedelta

    assert signing.token_alerts(settings, within_days=30) == []  # nothing presented yet, the seal far from expiry
    d = _pes(settings, 12, bordereaux=1)
    signing.prepare_batch(settings, "maire.saintsever", [d], _certificate(hsm, "maire"))
    later = datetime.fromisoformat(hsm["officials"]["maire"]["not_after"]) - timedelta(days=20)
    found = {a.source: (a, coll, official) for a, coll, official in signing.token_alerts(settings, within_days=60, at=later)}
    alert, coll, official = found["support-maire-saint-sever"]
    assert alert.subject == "Claire Dupré" and alert.level == "bientot" and official.users == ["maire.saintsever"]
    assert found["cachet-serveur"][0].usage == "de cachet serveur" and found["cachet-serveur"][1] is None
    assert "support-president-chalosse-tursan" not in found  # never presented: nothing known of it
