"""The dashboard with bearer-token auth: the page asks for the token once and sends it on
every call, its live watches included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .browser import chromium, find_browser
from support.reconciler import Reconciler
from support.waiting import wait_until

TOKEN = "dashboard-s3cret"
CONFIG = f"""
[auth]
providers = ["token"]
exempt_paths = ["/health", "/metrics", "/ui", "/ui/"]
[auth.token]
tokens = ["{TOKEN}"]
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reconciler]:
    find_browser()
    running = Reconciler(tmp_path_factory.mktemp("dashboard-auth"), CONFIG)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_the_page_asks_for_the_token_and_then_shows_live_data(guarded: Reconciler) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415 - after the skip check

    with guarded.api(TOKEN) as client:
        created = client.post(
            "/instances", json={"name": "kept", "model_id": "hash/8", "state": "stopped"}
        )
        assert created.status_code == 201, created.text
    with chromium() as page:
        page.get(f"{guarded.url}/ui/")
        dialog = wait_until(
            lambda: (d := page.find_element(By.ID, "login")).is_displayed() and d,
            what="the sign-in",
        )
        field = page.find_element(By.ID, "login-token")
        field.send_keys("wrong")
        dialog.find_element(By.CSS_SELECTOR, "button").click()
        wait_until(
            lambda: "refused" in page.find_element(By.ID, "login-text").text, what="a second ask"
        )
        field.clear()
        field.send_keys(TOKEN)
        dialog.find_element(By.CSS_SELECTOR, "button").click()
        wait_until(
            lambda: page.find_elements(By.CSS_SELECTOR, 'tr[data-name="kept"]'), what="the table"
        )
        wait_until(lambda: page.find_element(By.ID, "live").text == "live", what="the live watch")
        assert not page.find_element(By.ID, "login").is_displayed()
