"""A real headless Chromium driven by Selenium, for the dashboard tests.

Chromium and its driver come from the system (Debian's `chromium` and `chromium-driver`; CI's
`.ci/run` installs them). Without them the tests are skipped with the reason shown, never
silently.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.waiting import wait_until

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,768",  # a laptop screen
)


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or skip the test saying what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = next((p for p in map(shutil.which, DRIVERS) if p), None)
    if browser is None or driver is None:
        missing = " and ".join(
            n for n, p in (("chromium", browser), ("chromium-driver", driver)) if p is None
        )
        pytest.skip(
            f"dashboard browser tests need {missing} (apt-get install chromium chromium-driver)"
        )
    return browser, driver


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a fresh profile; quit on exit."""
    browser, driver = find_browser()
    from selenium import webdriver  # noqa: PLC0415 - only once the skip check passed
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="tei-ui-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        session = webdriver.Chrome(service=Service(driver), options=options)
        try:
            yield session
        finally:
            session.quit()


# ---- reading and driving the page ----------------------------------------------------
def cell(page: Any, name: str, column: str) -> str:
    """The text of one cell of an instance's row ("" while the row is absent), read in one
    step in the page: rows are replaced as updates arrive."""
    script = """
        const [name, column] = arguments;
        const row = document.querySelector(`tr[data-name="${name}"]`);
        if (!row) return "";
        const heads = [...document.querySelectorAll("table.instances thead th")]
            .map((h) => h.textContent.trim().toLowerCase());
        return row.children[heads.indexOf(column)].innerText.trim();
    """
    return str(page.execute_script(script, name, column))


def phase(page: Any, name: str) -> str:
    text = cell(page, name, "phase")
    return text.splitlines()[0] if text else ""


def text_of(page: Any, selector: str) -> str:
    script = (
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText).join('\\n')"
    )
    return str(page.execute_script(script, selector))


def click(page: Any, label: str) -> Any:
    """Click the button showing `label` once it is there."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415 - only once the skip check passed

    xpath = f"//button[normalize-space()='{label}']"
    button = wait_until(lambda: page.find_elements(By.XPATH, xpath), what=f"the {label} button")[0]
    button.click()
    return button


def screenshot(page: Any, path: Path) -> None:
    page.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000  # a rendered page, not a blank image


def press(page: Any, selector: str) -> None:
    """Click the element at `selector` once it is there; live updates may redraw it between
    finding and clicking it (a stale element), so it is found again then."""
    from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    def attempt() -> bool:
        try:
            page.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until(lambda: page.find_elements(By.CSS_SELECTOR, selector), what=selector)
    wait_until(attempt, what=f"a click on {selector}")


HOLD_SCRIPT = """
    const [method, suffix] = arguments;
    const sent = window.fetch;
    window.heldAnswers = [];
    window.unholdFetch = () => {  // once: later calls find nothing held
      window.fetch = sent;
      window.heldAnswers.splice(0).forEach((go) => go());
    };
    window.fetch = (input, init) => {
      const answer = sent(input, init);
      if ((init?.method || "GET") !== method || !String(input).endsWith(suffix)) return answer;
      return new Promise((resolve, reject) => {
        window.heldAnswers.push(() => answer.then(resolve, reject));
      });
    };
"""


@contextmanager
def answers_held(page: Any, method: str, suffix: str) -> Iterator[Callable[[], None]]:
    """The page's `method` requests to a URL ending in `suffix` are sent at once, but their
    answers reach the page only when the yielded function is called (at the latest when the
    block ends): an answer slower than the watch, as on a loaded network."""

    def release() -> None:
        page.execute_script("window.unholdFetch?.()")

    page.execute_script(HOLD_SCRIPT, method, suffix)
    try:
        yield release
    finally:
        release()
