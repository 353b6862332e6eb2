"""A real reconciler (`tei-reconciler run` as a child process) and a real headless Chromium
driven by Selenium, for the dashboard tests.

Chromium and its driver come from the system (Debian's `chromium` and `chromium-driver`; CI's
`.ci/run` installs them). Without them the tests are skipped with the reason shown, never
silently. Nothing here waits by sleeping: every wait is a poll against a deadline.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

DEADLINE = 45.0  # a loaded 2-core machine starts Python children slowly
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
_LISTENING = re.compile(r"REST API listening on (http://\S+?:\d+)")


def poll(check: Callable[[], T | None], *, within: float = DEADLINE, what: str) -> T:
    """`check()` until it returns something truthy, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        time.sleep(0.05)


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


class Reconciler:
    """A `tei-reconciler run` child process on 127.0.0.1 port 0, with its state file."""

    def __init__(self, root: Path, config: str | None = None) -> None:
        self.root = root
        self.config = config  # the --config TOML (e.g. [auth]), if any
        self.state_file = root / "state" / "state.toml"
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text("[instances]\n")
        self.log = root / "reconciler.log"
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        base = random.randrange(20000, 50000, 400)
        settings = {
            "TEI_BINARY": "builtin",
            "RUNTIME_DIR": str(self.root / "runtime"),
            "INSTANCE_PORT_RANGE": f"{base}-{base + 200}",
            "PROMETHEUS_PORT_RANGE": f"{base + 200}-{base + 400}",
            "MAX_INSTANCES": "150",
            "HEALTH_INTERVAL_SECS": "0.5",
            "BACKOFF_INITIAL_SECS": "0.5",
            "BACKOFF_MAX_SECS": "2",
            "STOP_GRACE_SECS": "5",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEI_RECONCILER_")}
        env.update({f"TEI_RECONCILER_{k}": v for k, v in settings.items()})
        return env

    def start(self) -> None:
        argv = [sys.executable, "-m", "tei_reconciler", "run", "--state", str(self.state_file)]
        argv += ["--api-port", "0", "--grpc-port", "0"]
        if self.config is not None:
            config = self.root / "config.toml"
            config.write_text(self.config)
            argv += ["--config", str(config)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.root
            )

        def listening() -> str | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"tei-reconciler run exited:\n{self.log.read_text()}")
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            return found.group(1) if found else None

        self.url = poll(listening, what="the REST API to listen")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # ---- the REST API, for setting the scene and checking results -------------------------
    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=DEADLINE + 15, headers=headers)

    def instance(self, name: str) -> dict[str, Any] | None:
        with self.api() as client:
            response = client.get(f"/instances/{name}")
        return response.json() if response.status_code == 200 else None

    def create(self, name: str, model_id: str = "hash/384", **fields: object) -> dict[str, Any]:
        with self.api() as client:
            response = client.post(
                "/instances", json={"name": name, "model_id": model_id, "gpu": "none", **fields}
            )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body
