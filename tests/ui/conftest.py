"""One reconciler and one browser per test module: each start costs seconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .browser import chromium, find_browser
from support.reconciler import Reconciler


@pytest.fixture(scope="module")
def reconciler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reconciler]:
    find_browser()  # skip before starting anything when there is no browser
    running = Reconciler(tmp_path_factory.mktemp("dashboard"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(reconciler: Reconciler) -> Iterator[Any]:
    with chromium() as session:
        yield session


@pytest.fixture
def page(browser: Any, reconciler: Reconciler) -> Iterator[Any]:
    """The browser on a freshly loaded dashboard; fails the test on a JavaScript error."""
    browser.get(f"{reconciler.url}/")
    yield browser
    errors = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]
    assert not errors, errors
