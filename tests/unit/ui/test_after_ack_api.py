"""API of issue 20: Hélios returns per collectivité (list, download, "lu" per user), stamped acte and
receipt downloads (French 404 before the ARActe). Identity faked as in test_dossier_actions_app."""

from __future__ import annotations

from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import helios_returns as H
from tests.unit.ui.test_dossier_actions_app import COLL, airflow, bearer, client, make, settings  # noqa: F401


def _returns(settings):  # noqa: F811
    siren = settings.config.collectivite(COLL).siren
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        for name, data in (("RET_A.xml", b"<PES_Retour>a</PES_Retour>"), ("ACQ_B.xml", b"<PES_ACQUIT>b</PES_ACQUIT>")):
            H.record_return(s, kind="PES_Retour" if name.startswith("RET") else "PES_ACQUIT", siren=siren, name=name,
                            sha256=store.put(data), size=len(data), nomfic=None, summary="résumé", dossier_ids=[])


def test_helios_returns_listed_downloaded_and_read_per_user(client, settings):  # noqa: F811
    _returns(settings)
    url = f"/api/v1/collectivites/{COLL}/retours-helios"
    rows = client.get(url, headers=bearer("t-agent")).json()
    assert {r["nom"] for r in rows} == {"RET_A.xml", "ACQ_B.xml"} and not any(r["lu"] for r in rows)
    target = next(r for r in rows if r["nom"] == "RET_A.xml")
    got = client.get(f"/api/v1/{target['telecharger']}", headers=bearer("t-agent"))
    assert got.status_code == 200 and got.content == b"<PES_Retour>a</PES_Retour>"
    assert next(r for r in client.get(url, headers=bearer("t-agent")).json() if r["id"] == target["id"])["lu"]
    assert not next(r for r in client.get(url, headers=bearer("t-maire")).json() if r["id"] == target["id"])["lu"]
    other = client.get(url, headers=bearer("t-autre"))  # another collectivité's agent
    assert other.status_code == 404 and "non autorisée" in other.json()["erreur"]
    assert client.get(f"/api/v1/collectivites/{COLL}/retours-helios/{target['id']}", headers=bearer("t-autre")
                      ).status_code == 404
    assert client.get(f"/api/v1/collectivites/{COLL}/retours-helios/999999", headers=bearer("t-agent")
                      ).status_code == 404
    assert client.get(url, headers=bearer("t-agent"), params={"limite": 10**6}).status_code == 422


def test_stamped_acte_and_receipt_before_the_aracte_are_a_french_404(client, settings):  # noqa: F811
    acte = make(settings, flow="actes", state="transmis", sha="c", path=("valide", "au_parapheur", "signe"))
    for path in ("acte-tamponne", "accuse-reception.pdf"):
        r = client.get(f"/api/v1/dossiers/{acte}/{path}", headers=bearer("t-agent"))
        assert r.status_code == 404 and "ARActe" in r.json()["correction"]
    r = client.post(f"/api/v1/dossiers/{acte}/publication", headers=bearer("t-agent"))
    assert r.status_code == 409 and "accusé réception" in r.json()["erreur"]


def test_helios_returns_page_lists_downloads_and_marks_read(client, settings):  # noqa: F811
    _returns(settings)
    html = client.get("/retours-helios", headers=bearer("t-agent"))
    assert html.status_code == 200 and "RET_A.xml" in html.text and "ACQ_B.xml" in html.text
    assert html.text.count("non lu") == 2 and "non rapproché" in html.text
    import re

    link = re.search(r'href="(/demat/retours-helios/saint-sever/\d+)">RET_A.xml', html.text).group(1)
    got = client.get(link.removeprefix("/demat"), headers=bearer("t-agent"))
    assert got.status_code == 200 and got.content == b"<PES_Retour>a</PES_Retour>"
    assert client.get("/retours-helios", headers=bearer("t-agent")).text.count("non lu") == 1
    assert client.get(link.removeprefix("/demat"), headers=bearer("t-autre")).status_code == 404
    other = client.get("/retours-helios", headers=bearer("t-autre"), params={"collectivite": "saint-sever"})
    assert "RET_A.xml" not in other.text  # another collectivité's agent sees only their own
