"""An official signs on their own SoftHSM2 token through `demat-signer` (a real subprocess).

15 bordereaux over 3 PES and 2 PDF actes, one PIN entry; every PES signature checked by xmlsec1
and by demat's verifier, every PAdES by pyHanko and openssl. Then the online flow against a small
local server speaking the platform's signature API (docs/signature.md), which prepares with
flows.signature.remote, keeps only JSON between requests (as across a restart) and assembles.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from flows.actes.pdf import minimal_pdf
from flows.helios.generate import generate_pes
from flows.signature import token as tok
from flows.signature.certs import CertificateRefused
from flows.signature.remote import (
    ExpectedSigner,
    RemoteSignatureRefused,
    TrustConfig,
    apply_signatures,
    load_prepared,
    make_batch,
    prepare_pdf,
    prepare_pes,
)
from flows.signature.verify import verify_pes
from tests.conftest import ROOT
from tests.unit.signature.test_remote import pades_check

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("softhsm2-util") is None or not Path(tok.default_module()).exists(),
                       reason="SoftHSM2 absent : installez le paquet Debian softhsm2"),
]
XMLSEC1 = shutil.which("xmlsec1")
# the installed console script (pyproject [project.scripts]) when the venv has it, else the module
_SCRIPT = Path(sys.executable).with_name("demat-signer")
AGENT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "signer_agent"]
OFFICIALS = [("maire", "Jeanne Dupré", "Maire"), ("adjoint", "Luc Martin", "Adjoint aux finances")]
ID_ATTRS = ["--id-attr:Id", "Bordereau", "--id-attr:Id", "http://uri.etsi.org/01903/v1.1.1#:SignedProperties",
            "--id-attr:Id", "http://www.w3.org/2000/09/xmldsig#:Signature"]


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    from flows.signature.softhsm import provision_tokens

    out = provision_tokens(tmp_path_factory.mktemp("hsm"), OFFICIALS)
    yield out
    tok.reset()


def _pin(info) -> str:
    return Path(info["pin_file"]).read_text().strip()


def _agent(args: list[str], hsm: dict, *, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, SOFTHSM2_CONF=hsm["conf"], PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([*AGENT, *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=full_env, timeout=120)


def _documents(cert: x509.Certificate) -> dict:
    docs = {}
    for n in range(3):
        pes = generate_pes(siret="21400192300018", idpost="040000", codcol="001", codbud="00",
                           nomfic=f"PESALR2_{n}", n_bordereaux=5, seed=n)
        docs[f"pes{n}"] = prepare_pes(pes, cert, role="Maire", place="40000 Mont-de-Marsan")
    for n in range(2):
        docs[f"acte{n}"] = prepare_pdf(minimal_pdf(f"Délibération n° 2026-{n}", "Objet : budget"), cert,
                                       role="Maire", place="Mont-de-Marsan", name=f"acte{n}.pdf")
    return docs


def _check_signed(signed: dict, ca: str, tmp_path: Path, bordereaux: int = 5) -> None:
    for ref, data in signed.items():
        if ref.startswith("pes"):
            report = verify_pes(data, trust_store=[ca], strict=True)
            assert report.ok and len(report.results) == bordereaux, report.to_text()
            if XMLSEC1:
                path = tmp_path / f"{ref}.xml"
                path.write_bytes(data)
                for r in report.results:
                    res = subprocess.run([XMLSEC1, "--verify", *ID_ATTRS, "--trusted-pem", ca, "--node-id",
                                          f"{r.bordereau_id}_SIG_1", str(path)], capture_output=True, text=True, timeout=60)
                    assert res.returncode == 0, (ref, r.bordereau_id, res.stderr)
        else:
            pades_check(data, ca, tmp_path)


def test_official_signs_15_bordereaux_and_2_actes_with_one_pin(hsm, tmp_path):
    info = hsm["officials"]["maire"]
    cert = x509.load_pem_x509_certificate(Path(info["certificate"]).read_bytes())
    trust = TrustConfig(anchors=[hsm["ca"]])
    expected = ExpectedSigner("Jeanne Dupré", info["cert_sha256"])
    docs = _documents(cert)
    stored = {ref: p.to_json() for ref, p in docs.items()}  # what the platform keeps durably
    batch = make_batch(docs, batch_id="lot-1", summaries={r: f"Commune de Saint-Test — {r}" for r in docs})
    assert len(batch["items"]) == 17
    (tmp_path / "lot.json").write_text(json.dumps(batch))
    pin = _pin(info)
    res = _agent(["sign", "--prepared", str(tmp_path / "lot.json"), "--token-label", info["label"],
                  "--pin-stdin", "--out", str(tmp_path / "sigs.json")], hsm, stdin=pin + "\n")
    assert res.returncode == 0, res.stderr
    assert "17 élément(s) à signer pour Jeanne Dupré" in res.stdout and "bordereau 5" in res.stdout
    assert pin not in res.stdout + res.stderr
    answer = json.loads((tmp_path / "sigs.json").read_text())
    assert len(answer["signatures"]) == 17 and answer["failed"] == {}
    assert pin not in (tmp_path / "sigs.json").read_text()
    # the platform restarted meanwhile: prepared states come back from JSON
    reloaded = {ref: load_prepared(text) for ref, text in stored.items()}
    applied = apply_signatures(reloaded, answer, trust=trust, expected=expected)
    assert not applied.refused and not applied.waiting and set(applied.signed) == set(docs)
    _check_signed(applied.signed, hsm["ca"], tmp_path)
    # posted twice: applied once, the same bytes
    again = apply_signatures(reloaded, answer, already=applied.accepted, trust=trust, expected=expected)
    assert again.signed == applied.signed


def test_wrong_pin_and_wrong_token_through_the_agent(hsm, tmp_path):
    maire, adjoint = hsm["officials"]["maire"], hsm["officials"]["adjoint"]
    cert = x509.load_pem_x509_certificate(Path(maire["certificate"]).read_bytes())
    batch = make_batch({"pes": prepare_pes(generate_pes(siret="21400192300018", idpost="040000", codcol="001",
                                                        codbud="00", nomfic="PESALR2_X", n_bordereaux=2), cert, role="Maire")},
                       batch_id="lot-2")
    (tmp_path / "lot.json").write_text(json.dumps(batch))
    wrong = "99999999" if _pin(maire) != "99999999" else "88888888"
    res = _agent(["sign", "--prepared", str(tmp_path / "lot.json"), "--token-label", maire["label"], "--pin-stdin",
                  "--out", str(tmp_path / "out.json")], hsm, stdin=wrong + "\n")
    assert res.returncode == 3 and "Code PIN incorrect" in res.stderr and "rien n'a été signé" in res.stderr
    assert wrong not in res.stdout + res.stderr and not (tmp_path / "out.json").exists()
    # the adjoint's token for the maire's batch: refused before any PIN is asked (empty stdin)
    res = _agent(["sign", "--prepared", str(tmp_path / "lot.json"), "--token-label", adjoint["label"], "--pin-stdin",
                  "--out", str(tmp_path / "out.json")], hsm)
    assert res.returncode == 4 and "préparé pour un autre certificat" in res.stderr, res.stderr
    # hostile batch file
    (tmp_path / "bad.json").write_text(json.dumps({"format": "demat-batch/1", "items": [{"id": "a", "digest_algorithm": "md5", "digest": "AA=="}]}))
    res = _agent(["sign", "--prepared", str(tmp_path / "bad.json"), "--token-label", maire["label"], "--pin-stdin",
                  "--out", str(tmp_path / "out.json")], hsm, stdin="x\n")
    assert res.returncode == 2 and "non pris en charge" in res.stderr


# --- the online flow against a local server speaking the platform API ----------------------------------------


class FakePlatform:
    """The server side the platform will implement (docs/signature.md), with JSON-only state."""

    TOKEN = "jeton-de-test"

    def __init__(self, official: dict, ca: str) -> None:
        cert = x509.load_pem_x509_certificate(Path(official["certificate"]).read_bytes())
        self.documents = {
            "D-PES-1": ("pes", generate_pes(siret="21400192300018", idpost="040000", codcol="001", codbud="00",
                                            nomfic="PESALR2_WEB", n_bordereaux=3)),
            "D-ACTE-1": ("pdf", minimal_pdf("Arrêté n° 7", "Voirie")),
        }
        self.expected = ExpectedSigner(official["name"], official["cert_sha256"])
        self.trust = TrustConfig(anchors=[ca])
        self.batches: dict[str, dict] = {}  # batch id -> {"prepared": {ref: json}, "accepted": {ref: {part: b64}}}
        self.signed: dict[str, bytes] = {}
        self.rejected: dict[str, str] = {}
        self.posts = 0
        del cert

    def handle(self, method: str, path: str, body: dict | None, auth: str | None):
        if auth != f"Bearer {self.TOKEN}":
            return 401, {"detail": "Not authenticated"}
        api = "/demat/api/v1/signatures"
        if method == "GET" and path == f"{api}/pending":
            return 200, {"items": [{"id": k, "collectivite": "Commune de Saint-Test", "objet": k, "kind": kind,
                                    "bordereaux": 3 if kind == "pes" else None}
                                   for k, (kind, _d) in self.documents.items() if k not in self.signed and k not in self.rejected]}
        if method == "POST" and path == f"{api}/batch":
            cert = x509.load_der_x509_certificate(base64.b64decode(body["certificate"]))
            prepared = {}
            for ref in body["ids"]:
                kind, data = self.documents[ref]
                if kind == "pes":
                    prepared[ref] = prepare_pes(data, cert, role="Maire", trust=self.trust, expected=self.expected)
                else:
                    prepared[ref] = prepare_pdf(data, cert, role="Maire", trust=self.trust, expected=self.expected)
            batch_id = f"lot-{len(self.batches) + 1}"
            self.batches[batch_id] = {"prepared": {r: p.to_json() for r, p in prepared.items()}, "accepted": {}}
            return 200, make_batch(prepared, batch_id=batch_id)
        if method == "POST" and path.startswith(f"{api}/batch/"):
            self.posts += 1
            state = self.batches[path.rsplit("/", 1)[1]]
            prepared = {r: load_prepared(t) for r, t in state["prepared"].items()}
            already = {r: {p: base64.b64decode(v) for p, v in parts.items()} for r, parts in state["accepted"].items()}
            applied = apply_signatures(prepared, body, already=already, trust=self.trust, expected=self.expected)
            state["accepted"] = {r: {p: base64.b64encode(v).decode() for p, v in parts.items()} for r, parts in applied.accepted.items()}
            self.signed.update(applied.signed)
            return 200, {"signed": sorted(applied.signed), "refused": applied.refused, "waiting": applied.waiting}
        if method == "POST" and path.endswith("/reject"):
            self.rejected[path.split("/")[-2]] = body["motif"]
            return 200, {"message": "Refus enregistré."}
        if method == "GET" and path.startswith(f"{api}/"):
            ref = path.split("/")[5]
            if ref not in self.documents:
                return 404, {"detail": "inconnu"}
            if path.endswith("/document"):
                return 200, self.documents[ref][1]
            return 200, {"id": ref, "kind": self.documents[ref][0]}
        return 404, {"detail": "route inconnue"}


@pytest.fixture
def platform(hsm):
    fake = FakePlatform(hsm["officials"]["maire"], hsm["ca"])

    class Handler(BaseHTTPRequestHandler):
        def _go(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            try:
                status, out = fake.handle(method, self.path, body, self.headers.get("Authorization"))
            except (CertificateRefused, RemoteSignatureRefused) as exc:  # the platform answers 422 with the reason
                status, out = 422, {"erreur": str(exc), "correction": "Branchez le support de l'élu désigné."}
            data = out if isinstance(out, bytes) else json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            self._go("GET")

        def do_POST(self):  # noqa: N802
            self._go("POST")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def test_agent_online_list_sign_show_reject(platform, hsm, tmp_path):
    info = hsm["officials"]["maire"]
    env = {"DEMAT_API_TOKEN": FakePlatform.TOKEN}
    res = _agent(["list", "--url", platform.url], hsm, env={"DEMAT_API_TOKEN": "mauvais"})
    assert res.returncode == 1 and "jeton absent ou expiré" in res.stderr
    res = _agent(["list", "--url", platform.url], hsm, env=env)
    assert res.returncode == 0 and "D-PES-1 | Commune de Saint-Test" in res.stdout and "3 bordereau(x)" in res.stdout
    res = _agent(["show", "D-ACTE-1", "--url", platform.url, "--document", str(tmp_path / "a.pdf")], hsm, env=env)
    assert res.returncode == 0 and (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    res = _agent(["sign", "--url", platform.url, "--token-label", info["label"], "--pin-stdin"], hsm,
                 stdin=_pin(info) + "\n", env=env)
    assert res.returncode == 0, res.stderr
    assert "Signé : D-ACTE-1" in res.stdout and "Signé : D-PES-1" in res.stdout and platform.posts == 1
    _check_signed({"pes": platform.signed["D-PES-1"], "acte": platform.signed["D-ACTE-1"]}, hsm["ca"], tmp_path, bordereaux=3)
    res = _agent(["list", "--url", platform.url], hsm, env=env)
    assert "Rien n'attend votre signature" in res.stdout
    platform.documents["D-PES-2"] = ("pes", platform.documents["D-PES-1"][1])
    res = _agent(["reject", "D-PES-2", "--url", platform.url, "--motif", "Montant erroné sur le bordereau 2"], hsm, env=env)
    assert res.returncode == 0 and platform.rejected == {"D-PES-2": "Montant erroné sur le bordereau 2"}
    # the adjoint's token for the maire's dossiers: the platform refuses the certificate
    platform.documents["D-PES-3"] = platform.documents["D-PES-2"]
    res = _agent(["sign", "--url", platform.url, "--ids", "D-PES-3", "--token-label", hsm["officials"]["adjoint"]["label"],
                  "--pin-stdin"], hsm, stdin=_pin(hsm["officials"]["adjoint"]) + "\n", env=env)
    assert res.returncode == 1 and "422" in res.stderr and "n'est pas celui enregistré" in res.stderr, res.stderr
    assert "Branchez le support de l'élu désigné." in res.stderr
    assert "D-PES-3" not in platform.signed
