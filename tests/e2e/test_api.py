"""The business API (/demat/api/v1) as a collectivité's software uses it, on the real platform.

A small vendor-style client (requests) submits an acte and a PES, polls their state and reads their
history; errors come back as French JSON {"erreur", "correction"}; isolation between collectivités
holds; and schemathesis fuzzes the read endpoints from the published OpenAPI for server errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import requests

from flows.config import load_config
from flows.dossier.service import dossier_id_for
from simulators.signer import AirflowClient, answer_all

pytestmark = pytest.mark.e2e


@dataclass
class VendorClient:
    """What a finance or acts-register vendor would write against the documented API."""

    base_url: str
    username: str
    password: str
    token: str = ""
    session: requests.Session = field(default_factory=requests.Session)

    def login(self) -> VendorClient:
        r = self.session.post(f"{self.base_url}/auth/token", json={"username": self.username,
                                                                   "password": self.password}, timeout=20)
        r.raise_for_status()
        self.token = r.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        return self

    def url(self, path: str) -> str:
        return f"{self.base_url}/demat/api/v1{path}"

    def submit(self, collectivite: str, flux: str, name: str, data: bytes) -> requests.Response:
        return self.session.post(self.url("/documents"), data={"collectivite": collectivite, "flux": flux},
                                 files={"fichier": (name, data, "application/octet-stream")}, timeout=60)

    def dossier(self, dossier_id: str) -> requests.Response:
        return self.session.get(self.url(f"/dossiers/{dossier_id}"), timeout=20)

    def wait_state(self, dossier_id: str, wanted: set[str], timeout: float, on_tick=None) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = self.dossier(dossier_id)
            if r.status_code == 200:
                last = r.json()
                if last["etat"] in wanted:
                    return last
                if last["final"]:
                    pytest.fail(f"{dossier_id} ended in {last['etat']}: {last.get('motif')}")
            if on_tick:
                on_tick()
            time.sleep(2)
        pytest.fail(f"{dossier_id} not in {wanted} after {timeout} s (last: {last and last['etat']})")


def _error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"erreur", "correction"}, body
    assert body["erreur"] and body["correction"]
    return body


def test_vendor_submits_acte_and_pes_and_follows_them(platform):
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    pw = platform.secrets["passwords"]
    vendor = VendorClient(platform.base_url, "agent.saintsever", pw["agent.saintsever"]).login()
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    acte = generate_acte_zip(collectivite=coll, numero=f"API{stamp[:10]}", nature="DE", matiere="5.2",
                             objet="Délibération déposée par l'API")
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic=f"PES_API_{stamp}", n_bordereaux=2)

    ids = {}
    for flux, name, data in (("actes", f"acte-api-{stamp}.zip", acte), ("helios", f"pes-api-{stamp}.xml", pes)):
        r = vendor.submit(coll.slug, flux, name, data)
        assert r.status_code == 202, r.text
        body = r.json()
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        assert body["sha256"] == sha and body["flux"] == flux
        assert body["dossier_id"] == dossier_id_for(coll.slug, flux, sha)
        assert body["suivi"].endswith(f"/demat/api/v1/dossiers/{body['dossier_id']}")
        ids[flux] = body["dossier_id"]
        # the same content again is a precise 409, not a second dossier
        dup = _error(vendor.submit(coll.slug, flux, f"copie-{name}", data), 409)
        assert "Doublon" in dup["erreur"]

    maire = AirflowClient(platform.base_url, "maire.saintsever", pw["maire.saintsever"])
    for flux, dossier_id in ids.items():
        state = vendor.wait_state(dossier_id, {"transmis", "acquitte", "depose_sae", "archive"}, timeout=240,
                                  on_tick=lambda: answer_all(maire))
        assert state["collectivite"] == "saint-sever" and state["flux"] == flux
        codes = [e["etat"] for e in state["historique"] if e["etat"]]
        assert codes[:5] == ["recu", "valide", "au_parapheur", "signe", "transmis"], codes
        history = vendor.session.get(vendor.url(f"/dossiers/{dossier_id}/historique"), timeout=20).json()
        assert any(e["acteur"] == "maire.saintsever" and "Signature accordée" in e["message"] for e in history)
        assert all(e["libelle"] and e["message"] for e in history)
    assert state["nomfic"] == f"PES_API_{stamp}"

    # acknowledgment and archive identifier: wait for the PES to be acknowledged by the DGFiP simulator
    vendor.wait_state(ids["helios"], {"acquitte", "depose_sae", "archive"}, timeout=120)
    ack = vendor.session.get(vendor.url(f"/dossiers/{ids['helios']}/accuse"), timeout=20)
    assert ack.status_code == 200, ack.text
    from flows.helios.acquit import parse_acquit

    acquit = parse_acquit(ack.content)
    assert acquit.nomfic == f"PES_API_{stamp}" and acquit.accepted
    arch = vendor.session.get(vendor.url(f"/dossiers/{ids['helios']}/archive"), timeout=20).json()
    assert arch["dossier_id"] == ids["helios"] and arch["etat"] in ("acquitte", "depose_sae", "archive")

    since = (datetime.now(UTC) - timedelta(minutes=15)).isoformat()
    listed = vendor.session.get(vendor.url("/dossiers"), params={"depuis": since}, timeout=20).json()
    assert set(ids.values()) <= {d["id"] for d in listed["dossiers"]}
    assert {d["collectivite"] for d in listed["dossiers"]} == {"saint-sever"}

    # isolation: the other collectivité's agent sees none of it and cannot submit for Saint-Sever
    other = VendorClient(platform.base_url, "agent.chalosse", pw["agent.chalosse"]).login()
    _error(other.dossier(ids["helios"]), 404)
    _error(other.submit("saint-sever", "helios", "x.xml", pes + b" "), 403)
    theirs = other.session.get(other.url("/dossiers"), params={"depuis": since}, timeout=20).json()
    assert not set(ids.values()) & {d["id"] for d in theirs["dossiers"]}


def test_api_errors_are_precise_and_in_french(platform):
    pw = platform.secrets["passwords"]
    vendor = VendorClient(platform.base_url, "agent.saintsever", pw["agent.saintsever"]).login()
    anonymous = requests.get(vendor.url("/dossiers/x"), timeout=20)
    assert "Authentification" in _error(anonymous, 401)["erreur"]
    forged = requests.get(vendor.url("/dossiers/x"), headers={"Authorization": "Bearer abc.def.ghi"}, timeout=20)
    _error(forged, 401)
    assert "actes" in _error(vendor.submit("saint-sever", "fax", "a.xml", b"<x/>"), 400)["correction"]
    assert ".zip" in _error(vendor.submit("saint-sever", "actes", "acte.pdf", b"%PDF-1.4"), 400)["erreur"]
    _error(vendor.submit("saint-sever", "helios", "vide.xml", b""), 400)
    _error(vendor.submit("atlantide", "helios", "a.xml", b"<x/>"), 404)
    assert "ISO 8601" in _error(vendor.session.get(vendor.url("/dossiers"), params={"depuis": "hier"}, timeout=20),
                                400)["correction"]
    _error(vendor.session.get(vendor.url("/dossiers"), timeout=20), 422)  # depuis is required
    _error(vendor.dossier("saint-sever-helios-20000101-0000000000"), 404)
    missing_file = vendor.session.post(vendor.url("/documents"), data={"collectivite": "saint-sever",
                                                                       "flux": "helios"}, timeout=20)
    assert "fichier" in _error(missing_file, 422)["erreur"]
    # path traversal in the file name never escapes the inbox
    r = vendor.submit("saint-sever", "helios", "../../../etc/evil.xml", b"<PES_Aller/>")
    assert r.status_code == 202, r.text
    assert r.json()["nom"] == "evil.xml"
    assert (platform.state / "inbox" / "saint-sever" / "helios").is_dir()
    assert not (platform.state / "etc").exists()


def test_openapi_is_published_and_schemathesis_finds_no_server_error(platform):
    spec = requests.get(f"{platform.base_url}/demat/api/v1/openapi.json", timeout=20)
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/documents", "/dossiers", "/dossiers/{dossier_id}", "/dossiers/{dossier_id}/accuse",
            "/dossiers/{dossier_id}/archive", "/dossiers/{dossier_id}/historique"} <= set(paths)
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    pw = platform.secrets["passwords"]
    token = VendorClient(platform.base_url, "agent.saintsever", pw["agent.saintsever"]).login().token
    schema = schemathesis.openapi.from_url(f"{platform.base_url}/demat/api/v1/openapi.json")
    base = f"{platform.base_url}/demat/api/v1"
    failures = []
    tested = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() != "GET":  # fuzzing POST /documents would fill the inbox with junk dossiers
            continue
        tested += 1

        @settings(max_examples=8, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:200]))
            content_type = response.headers.get("content-type") or ""
            content_type = content_type[0] if isinstance(content_type, list) else content_type
            if 400 <= response.status_code < 500 and content_type.startswith("application/json"):
                body = response.json()
                if not ({"erreur", "correction"} <= set(body)):
                    failures.append((case.method, case.formatted_path, "format", body))

        run()
    assert tested >= 5
    assert failures == [], failures[:5]
