"""The demat pages inside Airflow's UI, driven by a real browser (Playwright on Debian's Chromium).

The elected official logs in on Airflow's own login page, opens the Parapheur, selects the PES
files waiting for her, approves them in one action, and sees the dossiers move on in their journal.
Screenshots of every page land in test-artifacts/ for review.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import requests

from flows.config import load_config
from flows.dossier import service
from flows.dossier.db import session_scope
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e

BORDEREAUX_PER_FILE = 5  # three files: the batch of fifteen bordereaux signed in one action


def _wait_dossiers(platform, shas: list[str], state: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        with session_scope(platform.database_url) as s:
            for sha in shas:
                d = service.by_sha(s, sha)
                if d is not None and d.state == state:
                    found[sha] = d.id
        if len(found) == len(shas):
            return found
        time.sleep(1)
    pytest.fail(f"dossiers not in state {state} after {timeout} s: {len(found)}/{len(shas)}")


def _login(page, platform, user: str, path: str = "/demat/parapheur") -> None:
    """Log in on Airflow's own login page and land on `path`.

    The login form posts with JavaScript and only then navigates, so "network idle" can come
    before the session cookie exists: wait until the browser has left the login page.
    """
    page.goto(f"{platform.base_url}{path}")
    page.wait_for_url("**/auth/login**", timeout=30_000)  # Airflow's own login page (SimpleAuthManager)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", platform.secrets["passwords"][user])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
    if path not in page.url:  # the login page returns to `next` or to Airflow's home
        page.goto(f"{platform.base_url}{path}")


def test_official_approves_several_pes_in_one_action_and_follows_them(platform, browser):
    from flows.helios.generate import generate_pes

    ARTIFACTS.mkdir(exist_ok=True)
    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    shas = []
    for i in range(3):
        pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                           codbud=coll.helios.codbud, nomfic=f"PES_UI_{stamp}_{i}", n_bordereaux=BORDEREAUX_PER_FILE,
                           pieces_per_bordereau=2, seed=100 + i)
        shas.append(platform.drop(coll.slug, "helios", f"pes-ui-{stamp}-{i}.xml", pes))
    ids = _wait_dossiers(platform, shas, "au_parapheur", timeout=300)
    _approve_in_parapheur_and_follow(platform, browser, set(ids.values()), nomfic_prefix=f"PES_UI_{stamp}")


def _approve_in_parapheur_and_follow(platform, browser, ours: set[str], *, nomfic_prefix: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="fr-FR")
    _login(page, platform, "maire.saintsever")
    page.wait_for_selector("h1:has-text('Parapheur')", timeout=30_000)

    # wait until Airflow has parked the three requests long enough to be answered (settle rule)
    deadline = time.monotonic() + 120
    while True:
        enabled = {page.get_attribute(f"tr[data-dossier='{i}'] input[name=selection]", "disabled") is None
                   for i in ours if page.query_selector(f"tr[data-dossier='{i}']")}
        present = [i for i in ours if page.query_selector(f"tr[data-dossier='{i}']")]
        if len(present) == 3 and enabled == {True}:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the Parapheur never listed our 3 dossiers as ready: {present}")
        time.sleep(2)
        page.reload()
    for i in ours:
        row = page.locator(f"tr[data-dossier='{i}']")
        assert "Flux PES V2" in row.inner_text()
        assert "€" in row.inner_text()  # the amount of a PES is shown
    # the preview of a PES is its inspection summary
    preview = page.frame_locator("iframe[name=apercu]")
    page.locator(f"tr[data-dossier='{sorted(ours)[0]}'] a:has-text('Aperçu')").click()
    preview.locator("text=Bordereaux").first.wait_for(timeout=20_000)
    assert "5 · 10 pièce(s)" in preview.locator("dl.meta").inner_text()  # 15 bordereaux in all
    page.screenshot(path=str(ARTIFACTS / "parapheur.png"), full_page=True)

    # rejecting without a reason is refused before anything is sent
    for i in ours:
        page.check(f"tr[data-dossier='{i}'] input[name=selection]")
    page.once("dialog", lambda d: d.accept())
    page.click("#rejeter")
    assert all(page.is_checked(f"tr[data-dossier='{i}'] input[name=selection]") for i in ours)

    page.click("#approuver")
    page.wait_for_selector(".flash.ok")
    assert "3 dossier(s) approuvé(s)" in page.inner_text(".flash.ok"), page.inner_text("main")
    for i in ours:
        assert page.query_selector(f"tr[data-dossier='{i}']") is None

    # the dossiers move on: the journal shows who approved, then the signature and the transmission
    for n, dossier_id in enumerate(sorted(ours)):
        page.goto(f"{platform.base_url}/demat/dossiers/{dossier_id}")
        deadline = time.monotonic() + 150
        while True:
            journal = page.inner_text("#journal")
            if "Transmis à la DGFiP" in journal:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{dossier_id} did not reach the transmission; journal:\n{journal}")
            time.sleep(3)
            page.reload()
        assert "Signature accordée par maire.saintsever (étape 1/1)" in journal
        assert "Signé électroniquement" in journal
        links = page.inner_text("#artefacts")
        assert "Document original" in links and "Document signé" in links
        run_link = page.get_attribute("a[href*='/dags/demat_pes/runs/']", "href")
        assert run_link and f"dossier__{dossier_id}" in requests.utils.unquote(run_link)
        if n == 0:
            page.screenshot(path=str(ARTIFACTS / "dossier.png"), full_page=True)
            href = page.get_attribute("#artefacts a", "href")
            r = page.request.get(f"{platform.base_url}{href}")
            assert r.status == 200 and r.body()[:5] == b"<?xml"

    # one action signed every bordereau of the three files: one XAdES per bordereau
    from lxml import etree

    from flows.dossier.store import ArtefactStore

    store = ArtefactStore(str(platform.state / "store"))
    with session_scope(platform.database_url) as s:
        signed = [store.get(service.artefact(service.get(s, i), "signed").sha256) for i in ours]
    ds = "{http://www.w3.org/2000/09/xmldsig#}Signature"
    assert sum(len(etree.fromstring(x).findall(f".//{ds}")) for x in signed) == 3 * BORDEREAUX_PER_FILE

    page.goto(f"{platform.base_url}/demat/dossiers?nomfic={nomfic_prefix}")
    assert page.locator("#dossiers tbody tr").count() == 3
    page.goto(f"{platform.base_url}/demat/dossiers")
    page.screenshot(path=str(ARTIFACTS / "dossiers.png"), full_page=True)
    page.goto(f"{platform.base_url}/demat/tableau-de-bord")
    assert "Par état" in page.inner_text("main")
    page.screenshot(path=str(ARTIFACTS / "tableau-de-bord.png"), full_page=True)
    page.close()


def test_isolation_and_navigation(platform, browser):
    # the other collectivité's agent sees no Saint-Sever dossier, even by its address
    with session_scope(platform.database_url) as s:
        from sqlalchemy import select

        from flows.dossier.models import Dossier

        theirs = s.execute(select(Dossier.id).where(Dossier.collectivite == "saint-sever").limit(1)).scalar()
    page = browser.new_page(locale="fr-FR")
    _login(page, platform, "agent.chalosse", "/demat/dossiers")
    page.wait_for_selector("#dossiers", timeout=30_000)
    assert "Commune de Saint-Sever" not in page.inner_text("#dossiers")
    if theirs:
        r = page.goto(f"{platform.base_url}/demat/dossiers/{theirs}")
        assert r.status == 404
    # Airflow lists the two pages in its navigation (plugin external views)
    token = requests.post(f"{platform.base_url}/auth/token", json={
        "username": "agent.chalosse", "password": platform.secrets["passwords"]["agent.chalosse"]}, timeout=20)
    plugins = requests.get(f"{platform.base_url}/api/v2/plugins",
                           headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=20)
    if plugins.status_code == 200:
        views = [v for p in plugins.json()["plugins"] if p["name"] == "demat" for v in p["external_views"]]
        assert {v["name"] for v in views} == {"Parapheur", "Dossiers"}
    page.close()
