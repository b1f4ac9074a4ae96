"""Airflow's navigation, in a real browser: an agent sees demat's entries only, an operator everything.

Playwright on Debian's Chromium, as tests/e2e/test_ui.py. The agent logs in on Airflow's own login
page and lands on Airflow's home: the navigation has demat's Parapheur and Dossiers but no Dags,
Assets, Browse nor Admin entry (issue 14), and Airflow's own Dags page shows them nothing. The
operator's navigation has them all. Screenshots in test-artifacts/.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e

AIRFLOW_ENTRIES = ("Dags", "Assets", "Browse", "Admin")
DEMAT_ENTRIES = ("Parapheur", "Dossiers")
SIDEBAR = "[data-testid=nav-sidebar]"


def _login_home(page, platform, user: str) -> None:
    page.goto(f"{platform.base_url}/")
    page.wait_for_url("**/auth/login**", timeout=30_000)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", platform.secrets["passwords"][user])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
    page.goto(f"{platform.base_url}/")
    # the navigation is drawn once the plugin list (demat's entries) has arrived
    page.locator(f"{SIDEBAR} a[aria-label=Parapheur]").wait_for(timeout=60_000)


def _visible_entries(page) -> set[str]:
    """Our names among the side bar's visible labels (innerText leaves out what is not displayed)."""
    labels = {line.strip() for line in page.locator(SIDEBAR).inner_text().splitlines()}
    return labels & {*AIRFLOW_ENTRIES, *DEMAT_ENTRIES}


def test_agent_sees_only_demat_in_airflow_navigation(platform, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="en-US")
    _login_home(page, platform, "agent.chalosse")
    page.wait_for_timeout(1500)  # let every menu request settle before judging what is drawn
    shown = _visible_entries(page)
    page.screenshot(path=str(ARTIFACTS / "airflow-nav-agent.png"), full_page=True)
    assert shown == set(DEMAT_ENTRIES), shown
    # and typing Airflow's addresses shows no dossier run either
    page.goto(f"{platform.base_url}/dags/demat_pes/runs")
    page.wait_for_timeout(3000)
    assert "dossier__" not in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "airflow-dags-agent.png"), full_page=True)
    # demat's own page still opens from there
    page.goto(f"{platform.base_url}/")
    page.click(f"{SIDEBAR} a[aria-label=Dossiers]")
    page.wait_for_url("**/plugin/dossiers**", timeout=30_000)
    page.frame_locator("iframe").first.locator("#dossiers").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "airflow-nav-agent-dossiers.png"), full_page=True)
    page.close()


def test_operator_keeps_airflow_navigation(platform, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="en-US")
    _login_home(page, platform, "operateur")
    page.wait_for_timeout(1500)
    shown = _visible_entries(page)
    page.screenshot(path=str(ARTIFACTS / "airflow-nav-operator.png"), full_page=True)
    assert shown == set(AIRFLOW_ENTRIES) | set(DEMAT_ENTRIES), shown
    page.goto(f"{platform.base_url}/dags")
    page.get_by_text("demat_pes").first.wait_for(timeout=30_000)
    page.close()
