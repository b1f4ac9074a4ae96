"""Issue 20 through the running platform: antivirus at the door (a clamd started by the launcher
with a test signature database), then an arrêté acknowledged, stamped, published automatically,
downloadable through the API and listed on the public page (no login)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

import pytest
import requests

from flows.dossier import service
from flows.dossier.db import session_scope
from tests.clamav import EICAR, available
from tests.e2e.test_walking_skeleton import _arrete_to_the_end, _collectivite, _configured

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def av_platform(platform):
    """The session's platform: tests/e2e/conftest.py gives it DEMAT_CLAMAV_DB, a database of test
    signatures, whenever clamav-daemon is installed; the launcher starts its own clamd on it."""
    return platform


def _token(platform, user: str = "admin") -> dict:
    tok = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": user, "password": platform.secrets["passwords"][user]}).json()["access_token"]
    return {"Authorization": f"Bearer {tok}"}


def _scanning(platform) -> bool:
    return "Antivirus : clamd sur" in (platform.state / "launcher.log").read_text(errors="replace")


def test_infected_files_are_refused_at_the_door(av_platform):
    platform = av_platform
    if not available():
        pytest.skip("clamav-daemon absent")
    assert _scanning(platform), "clamav-daemon is installed but the platform's launcher did not start clamd"
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    body = EICAR + f"\n{stamp}".encode()  # unique content: the body signature still matches
    platform.drop("saint-sever", "helios", f"PES-infecte-{stamp}.xml", body)
    rejected = platform.state / "inbox" / "saint-sever" / "helios" / "rejetes"

    def refusal():
        for p in rejected.glob(f"*PES-infecte-{stamp}.xml.erreur.txt"):
            return p.read_text()
        return None

    text = platform.wait(refusal, time.monotonic() + 180, "refus antivirus dans rejetes/")
    assert "Demat.Test.EICAR" in text and "quarantaine" in text and "Correction" in text
    kept = list((platform.state / "quarantine" / "saint-sever" / "helios").glob(f"*PES-infecte-{stamp}.xml"))
    assert len(kept) == 1 and kept[0].read_bytes() == body
    with session_scope(platform.database_url) as s:
        assert service.by_sha(s, hashlib.sha256(body).hexdigest()) is None
    store = platform.state / "store"
    assert not any(p.is_file() and p.read_bytes() == body for p in store.rglob("*"))
    r = requests.post(f"{platform.base_url}/demat/api/v1/documents", headers=_token(platform), timeout=60,
                      data={"collectivite": "saint-sever", "flux": "helios"},
                      files={"fichier": (f"PES-api-{stamp}.xml", body + b"api", "application/xml")})
    assert r.status_code == 422 and "Demat.Test.EICAR" in r.json()["erreur"]


def test_acknowledged_arrete_is_stamped_published_and_public(av_platform):
    platform = av_platform

    def automatic_and_published(data: dict) -> None:
        coll = _collectivite(data, "saint-sever")
        coll["circuits"]["arrete"] = [{"kind": "AUTO", "official": "maire"}]
        coll["publication_auto"] = ["AR"]

    with _configured(platform, automatic_and_published) as config:
        d_id = _arrete_to_the_end(platform, config, "saint-sever", "PUB", "Arrêté de stationnement place du marché")
    with session_scope(platform.database_url) as s:
        d = service.get(s, d_id)
        kinds = {a.kind for a in d.artefacts}
        idacte = d.idacte
        assert {"acte_tamponne", "acte_tamponne_publie", "accuse_reception"} <= kinds, kinds
        assert "publication" in [e.event for e in d.journal]
    api = f"{platform.base_url}/demat/api/v1/dossiers/{d_id}"
    pdf = requests.get(f"{api}/acte-tamponne", headers=_token(platform), timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and b"Publi" in pdf.content
    receipt = requests.get(f"{api}/accuse-reception.pdf", headers=_token(platform), timeout=30)
    assert receipt.status_code == 200 and receipt.content.startswith(b"%PDF")
    again = requests.post(f"{api}/publication", headers=_token(platform), timeout=30)
    assert again.status_code == 202 and again.json()["statut"] == "deja_enregistre"
    public = f"{platform.base_url}/demat/public/saint-sever"
    feed = requests.get(f"{public}/actes.json", timeout=30)  # no credentials
    assert feed.status_code == 200
    assert idacte in [a["idacte"] for a in feed.json()["actes"]]
    assert requests.get(f"{public}/actes.json", params={"objet": "stationnement place"}, timeout=30).json()["total"] >= 1
    page = requests.get(f"{public}/actes", timeout=30)
    assert page.status_code == 200 and idacte in page.text
    published = requests.get(f"{public}/actes/{idacte}.pdf", timeout=30)
    assert published.status_code == 200 and published.content == pdf.content
    assert requests.get(f"{platform.base_url}/demat/api/v1/dossiers/{d_id}", timeout=30).status_code == 401
