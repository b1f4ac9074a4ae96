"""The public publication page and feed: published actes only, bounded, searchable (real PostgreSQL)."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from demat_airflow.ui import public
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import publication as P
from tests.unit.pipeline.test_publication import COLL, acknowledge, make_acte
from tests.unit.pipeline.test_publication import settings as settings  # noqa: F401 - the fixture


@pytest.fixture
def client(settings, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DEMAT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DEMAT_STORE", settings.store_root)
    monkeypatch.setenv("DEMAT_STATE", str(settings.state_dir))
    monkeypatch.setenv("DEMAT_PUBLIC_RATE", "40")
    public._settings.cache_clear()
    yield TestClient(public.create_public())
    public._settings.cache_clear()


@pytest.fixture
def published(settings):  # noqa: F811
    shown, shown_idacte = make_acte(settings, "DEL50", objet="Tarifs <script>alert(1)</script> piscine")
    hidden, hidden_idacte = make_acte(settings, "DEL51", objet="Recrutement confidentiel")
    acknowledge(settings, shown_idacte)
    acknowledge(settings, hidden_idacte, serial=2)  # acknowledged, stamped, but NOT published
    with session_scope(settings.database_url) as s:
        P.publish(s, ArtefactStore(settings.store_root), service.get(s, shown), actor="agent1",
                  config=settings.config, on=date(2026, 11, 25))
    return shown_idacte, hidden_idacte


def test_feed_lists_only_published_actes_with_only_public_fields(client, published):
    shown, hidden = published
    r = client.get(f"/{COLL}/actes.json")
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 1 and [a["idacte"] for a in body["actes"]] == [shown]
    assert set(body["actes"][0]) == {"idacte", "nature", "objet", "date_decision", "publie_le", "pdf"}
    assert hidden not in r.text and "confidentiel" not in r.text
    pdf = client.get(f"/{COLL}/actes/{shown}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and b"Publi" in pdf.content
    assert client.get(f"/{COLL}/actes/{hidden}.pdf").status_code == 404  # stamped but not published
    assert client.get(f"/cc-chalosse-tursan/actes/{shown}.pdf").status_code == 404  # another collectivité
    assert client.get("/cc-chalosse-tursan/actes.json").json()["total"] == 0


def test_page_escapes_and_searches(client, published):
    shown, _ = published
    page = client.get(f"/{COLL}/actes")
    assert page.status_code == 200 and shown in page.text
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.get(f"/{COLL}/actes.json", params={"objet": "piscine"}).json()["total"] == 1
    assert client.get(f"/{COLL}/actes.json", params={"objet": "Recrutement"}).json()["total"] == 0
    assert client.get(f"/{COLL}/actes.json", params={"du": "2026-11-26"}).json()["total"] == 0
    assert client.get(f"/{COLL}/actes.json", params={"nature": "DE", "au": "2026-11-25"}).json()["total"] == 1


@pytest.mark.parametrize("params", [{"du": "hier"}, {"nature": "XX"}, {"objet": "x" * 101}, {"page": "0"},
                                    {"page": "100000"}, {"nature": "DE' OR 1=1 --"}])
def test_hostile_queries_are_refused_in_french(client, published, params):
    r = client.get(f"/{COLL}/actes.json", params=params)
    assert r.status_code == 422 and "invalide" in r.json()["erreur"]


def test_unknown_places_and_methods(client, published):
    assert client.get("/inconnue/actes.json").status_code == 404
    assert client.get(f"/{COLL}/actes/..%2F..%2Fetc%2Fpasswd.pdf").status_code == 404
    assert client.get(f"/{COLL}/dossiers").status_code == 404
    assert client.post(f"/{COLL}/actes.json").status_code == 405


def test_rate_limited_per_address(client, published):
    codes = [client.get(f"/{COLL}/actes.json").status_code for _ in range(45)]
    assert codes[:40] == [200] * 40 and codes[-1] == 429
    r = client.get(f"/{COLL}/actes.json")
    assert int(r.headers["retry-after"]) >= 1 and "Trop de requêtes" in r.json()["erreur"]


def test_rate_limit_memory_is_bounded():
    now = [0.0]
    limit = public.RateLimit(2, max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        assert limit.retry_after(f"10.0.{i // 256}.{i % 256}") == 0
    assert len(limit.hits) == 100
    assert limit.retry_after("a") == 0 and limit.retry_after("a") == 0 and limit.retry_after("a") > 0
    now[0] = 61.0
    assert limit.retry_after("a") == 0
