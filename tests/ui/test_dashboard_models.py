"""The Models view in a real headless Chromium against a real `tei-reconciler run` that fetches
from a local Hugging Face Hub: the list, a download's progress, an instance waiting for its
model, the check before start, and the API's refusal to delete the files of a model in use."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .browser import answers_held, click, find_browser, phase, press, text_of
from support.hub import Hub, serving
from support.model_files import MINILM_CONFIG, as_json, safetensors
from support.reconciler import Reconciler
from support.waiting import wait_until

REASON = "selenium is not installed (pip install -e '.[dev]')"
By = pytest.importorskip("selenium.webdriver.common.by", reason=REASON).By

WEIGHTS = ("model.safetensors", "onnx/model.onnx")  # whichever the fetch asks for
FILES = {
    "config.json": as_json(MINILM_CONFIG),
    "merges.txt": b"m" * 100_000,  # fetched before the weights (name order)
    "tokenizer.json": b"{}",
    "model.safetensors": safetensors({"w": ("F32", (128, 256))}),
    "onnx/model.onnx": b"\0" * 131_072,
}
LISTED = re.compile(r"\d+ models?\b")
REPOS = (
    "acme/declared-a",
    "acme/implicit-a",
    "acme/gated-b",
    "acme/slow-c",
    "acme/used-d",
    "acme/quick-f",
)


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with serving() as running:
        for repo in REPOS:
            running.add(repo, FILES)
        yield running


@pytest.fixture(scope="module")
def reconciler(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reconciler]:
    """Overrides the dashboard's reconciler: this one fetches from the local Hub."""
    find_browser()
    settings = {"HF_OFFLINE": "false", "HF_ENDPOINT": hub.url}
    running = Reconciler(tmp_path_factory.mktemp("dashboard-models"), settings=settings)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def held(hub: Hub, repo: str) -> Iterator[threading.Event]:
    """The Hub pauses `repo`'s weights 16 KiB in until the event is set (at the latest when
    the block ends, so no Hub thread outlives the test)."""
    release = threading.Event()
    for path in WEIGHTS:
        fault = hub.fault(repo, path)
        fault.gate, fault.gate_at = release, 16 * 1024
    try:
        yield release
    finally:
        release.set()


def model_row(page: Any, model_id: str) -> dict[str, str]:
    """One row of the models table as {column: text} ({} while absent), read in one step."""
    script = """
        const row = document.querySelector(`table.models tr[data-model="${arguments[0]}"]`);
        if (!row) return {};
        const heads = [...document.querySelectorAll("table.models thead th")]
            .map((h) => h.textContent.trim().toLowerCase());
        const out = Object.fromEntries(heads.map((h, i) => [h, row.children[i].innerText.trim()]));
        out.status_attr = row.dataset.status;
        return out;
    """
    row: dict[str, str] = page.execute_script(script, model_id)
    return row


def open_models(page: Any, reconciler: Reconciler) -> None:
    page.get(f"{reconciler.url}/ui/#/models")
    wait_until(lambda: LISTED.match(text_of(page, "#models-shown")), what="the model list")


def progress_text(page: Any, selector: str) -> str:
    """The `aria-valuetext` of the progress bar under `selector` ("" while there is none)."""
    script = "return document.querySelector(arguments[0])?.getAttribute('aria-valuetext')"
    return str(page.execute_script(script, selector) or "")


def test_the_models_page_lists_a_declared_model_and_an_instances_implicit_model(
    page: Any, reconciler: Reconciler
) -> None:
    def api_view() -> str:
        with reconciler.api() as api:
            return api.get("/models/acme%2Fdeclared-a").text

    reconciler.create("holder-a", model_id="acme/implicit-a", state="stopped")
    page.find_element(By.LINK_TEXT, "Models").click()
    page.find_element(By.ID, "declare-id").send_keys("acme/declared-a")
    click(page, "Declare")
    # The row comes with the file's edit; its status once the registry looked at the model.
    declared = wait_until(
        lambda: (
            "no instance uses it" in (r := model_row(page, "acme/declared-a")).get("status", "")
            and r
        ),
        what="the declared model's row, looked at by the registry",
        detail=lambda: f"row: {model_row(page, 'acme/declared-a')}\nAPI: {api_view()}",
    )
    assert '[models."acme/declared-a"]' in reconciler.state_file.read_text()
    assert "declared" in declared["model"]
    assert declared["status"].startswith("available")
    assert declared["used by"] == "\N{EN DASH}"  # nobody

    implicit = wait_until(
        lambda: (r := model_row(page, "acme/implicit-a")).get("status_attr") == "downloaded" and r,
        what="the implicit model fetched",
    )
    assert implicit["used by"] == "holder-a"
    assert "declared" not in implicit["model"]
    assert implicit["size on disk"].endswith("KiB")
    assert implicit["architecture"].startswith("BertModel")
    assert "models--acme--implicit-a/snapshots/" in implicit["cache path"]
    assert implicit["revision"].startswith("main")


def test_a_download_answer_slower_than_the_watch_does_not_take_the_row_back(
    page: Any, reconciler: Reconciler
) -> None:
    with reconciler.api() as api:
        assert api.post("/models", json={"model_id": "acme/quick-f"}).status_code == 201
    open_models(page, reconciler)
    wait_until(lambda: model_row(page, "acme/quick-f"), what="the row")
    with answers_held(page, "POST", "/models/acme%2Fquick-f/download") as release:
        press(page, 'button[aria-label="Download acme/quick-f now"]')
        wait_until(
            lambda: model_row(page, "acme/quick-f").get("status_attr") == "downloaded",
            what="the watch's word: on disk",
        )
        release()  # the answer, "queued" when it was written, reaches the page now
        wait_until(lambda: "download requested" in text_of(page, ".toast"), what="the answer")
    assert model_row(page, "acme/quick-f")["status_attr"] == "downloaded"


def test_a_model_declared_by_editing_the_file_appears_on_the_open_page_and_goes(
    page: Any, reconciler: Reconciler
) -> None:
    open_models(page, reconciler)
    page.execute_script("window.sameDocument = true")  # gone if the page were loaded again
    before = reconciler.state_file.read_text()
    reconciler.state_file.write_text(before + '\n[models."acme/edited-e"]\nrevision = "v1"\n')
    row = wait_until(lambda: model_row(page, "acme/edited-e"), what="the edited-in model's row")
    assert "declared" in row["model"]
    assert row["revision"].startswith("v1")
    assert "no instance uses it" in row["status"]
    reconciler.state_file.write_text(before)
    wait_until(lambda: not model_row(page, "acme/edited-e"), what="the row to go")
    assert page.execute_script("return window.sameDocument") is True


def test_download_now_shows_the_progress_then_the_model_on_disk(
    page: Any, reconciler: Reconciler, hub: Hub
) -> None:
    with reconciler.api() as api:
        assert api.post("/models", json={"model_id": "acme/gated-b"}).status_code == 201
    open_models(page, reconciler)
    with held(hub, "acme/gated-b") as release:
        wait_until(lambda: model_row(page, "acme/gated-b"), what="the row")
        press(page, 'button[aria-label="Download acme/gated-b now"]')
        bar = 'tr[data-model="acme/gated-b"] progress'
        shown = wait_until(
            lambda: (t := progress_text(page, bar)) and "KiB of" in t and t,
            what="the download's progress",
        )
        assert "%)" in shown
        assert model_row(page, "acme/gated-b")["status"].startswith("downloading")
        assert "declared" in model_row(page, "acme/gated-b")["model"]  # still, while it downloads
        release.set()
        done = wait_until(
            lambda: (r := model_row(page, "acme/gated-b")).get("status_attr") == "downloaded" and r,
            what="the model on disk",
        )
    assert not page.find_elements(By.CSS_SELECTOR, bar)
    assert done["size on disk"].endswith("KiB")
    assert done["architecture"].startswith("BertModel")
    assert "Downloaded" in done["status"]


def test_an_instance_waiting_for_its_model_says_so_and_links_to_the_model(
    page: Any, reconciler: Reconciler, hub: Hub
) -> None:
    with held(hub, "acme/slow-c") as release:
        reconciler.create("waiter-c", model_id="acme/slow-c")
        row = 'tr[data-name="waiter-c"]'
        wait_until(
            lambda: "Downloading" in text_of(page, f"{row} .why"), what="waiter-c Downloading"
        )
        assert phase(page, "waiter-c") == "Pending"
        press(page, f"{row} td.model a")
        wait_until(lambda: page.current_url.endswith("#/models/acme%2Fslow-c"), what="the page")
        wait_until(
            lambda: "KiB of" in progress_text(page, "#model-status progress"),
            what="the progress on the model page",
        )
        assert "waiter-c" in text_of(page, 'section[aria-labelledby="m-users"]')
        release.set()
        wait_until(lambda: "downloaded" in text_of(page, "#model-status"), what="the model")
    # The built-in engine's check before start refuses the repo (it has no pooling config).
    checks = wait_until(lambda: text_of(page, "#model-checks"), what="the check's refusal")
    assert "Refused for waiter-c (UnsupportedModel)" in checks
    assert "cannot serve it" in checks
    assert "BertModel" in text_of(page, "#model-metadata")
    page.find_element(By.LINK_TEXT, "waiter-c").click()
    wait_until(lambda: page.current_url.endswith("#/instances/waiter-c"), what="the instance")
    field = wait_until(lambda: text_of(page, ".model-field"), what="the model field")
    assert field.startswith("acme/slow-c downloaded")


def test_deleting_the_files_of_a_model_in_use_shows_the_apis_refusal(
    page: Any, reconciler: Reconciler
) -> None:
    with reconciler.api() as api:
        assert api.post("/models", json={"model_id": "acme/used-d"}).status_code == 201
    reconciler.create("holder-d", model_id="acme/used-d", state="stopped")
    page.get(f"{reconciler.url}/ui/#/models/acme%2Fused-d")
    wait_until(lambda: "downloaded" in text_of(page, "#model-status"), what="the model")
    click(page, "Remove")
    page.find_element(By.ID, "confirm-check").click()  # also delete its files
    assert "holder-d" in page.find_element(By.ID, "confirm-option").text
    page.find_element(By.ID, "confirm-ok").click()
    error = wait_until(lambda: text_of(page, "#model-error"), what="the refusal")
    assert error == (
        "Deleting its files was refused. MODEL_IN_USE: acme/used-d is used by instance(s) "
        "holder-d: change or delete them first"
    )
    assert '[models."acme/used-d"]' in reconciler.state_file.read_text()  # nothing was done

    click(page, "Remove")  # undeclare only: allowed, the files stay
    page.find_element(By.ID, "confirm-ok").click()
    wait_until(
        lambda: '[models."acme/used-d"]' not in reconciler.state_file.read_text(),
        what="the table removed",
    )
    wait_until(
        lambda: "wanted by its instances only" in text_of(page, "#model-status"),
        what="the page to follow",
    )
    assert "downloaded" in text_of(page, "#model-status")
