"""The dashboard in a real headless Chromium against a real `tei-reconciler run`: live
updates, actions, the state-file editor, a read-only file, the last exit, and 100 instances."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .browser import answers_held, cell, click, phase, screenshot, text_of
from support.reconciler import Reconciler
from support.waiting import wait_until

REASON = "selenium is not installed (pip install -e '.[dev]')"
By = pytest.importorskip("selenium.webdriver.common.by", reason=REASON).By
Keys = pytest.importorskip("selenium.webdriver.common.keys", reason=REASON).Keys


def test_an_instance_created_meanwhile_appears_and_goes_ready_without_a_reload(
    page: Any, reconciler: Reconciler, tmp_path: Path
) -> None:
    wait_until(lambda: page.find_element(By.ID, "live").text == "live", what="the live watch")
    reconciler.create("live-a")
    wait_until(lambda: cell(page, "live-a", "model") == "hash/384", what="the new row")
    wait_until(lambda: phase(page, "live-a") == "Running", what="live-a Running on the page")
    assert cell(page, "live-a", "ready") == "1/1"
    assert page.current_url.endswith("/ui/")  # "/" led here
    screenshot(page, tmp_path / "ready.png")


def test_the_stop_button_stops_the_instance_from_the_keyboard_and_the_phase_follows(
    page: Any, reconciler: Reconciler
) -> None:
    reconciler.create("stop-a")
    wait_until(lambda: phase(page, "stop-a") == "Running", what="stop-a Running on the page")
    page.find_element(By.CSS_SELECTOR, 'button[aria-label="Stop stop-a"]').send_keys(Keys.ENTER)
    wait_until(lambda: phase(page, "stop-a") in {"Stopping", "Stopped"}, what="the stop to show")
    wait_until(lambda: phase(page, "stop-a") == "Stopped", what="stop-a Stopped on the page")
    # The row was redrawn under the keyboard user: focus is on its first action, now Start.
    focused = page.switch_to.active_element
    assert focused.get_attribute("aria-label") == "Start stop-a"
    assert 'state = "stopped"' in reconciler.state_file.read_text()
    assert "stop-a: set to stopped" in text_of(page, ".toast")


def test_an_actions_answer_slower_than_the_watch_does_not_take_the_row_back(
    page: Any, reconciler: Reconciler
) -> None:
    reconciler.create("slow-answer")
    wait_until(lambda: phase(page, "slow-answer") == "Running", what="slow-answer Running")
    with answers_held(page, "POST", "/instances/slow-answer/stop") as release:
        page.find_element(By.CSS_SELECTOR, 'button[aria-label="Stop slow-answer"]').click()
        wait_until(lambda: phase(page, "slow-answer") == "Stopped", what="the watch's Stopped")
        release()  # the answer, written while the process still ran, reaches the page now
        wait_until(lambda: "slow-answer: set to stopped" in text_of(page, ".toast"), what="it")
    assert phase(page, "slow-answer") == "Stopped"


def test_the_create_form_shows_the_apis_error_beside_the_field_then_creates(
    page: Any, reconciler: Reconciler
) -> None:
    page.find_element(By.LINK_TEXT, "New instance").click()
    name = wait_until(lambda: page.find_elements(By.ID, "f-name"), what="the form")[0]
    name.send_keys("Bad_Name")
    page.find_element(By.ID, "f-model_id").send_keys("hash/384")
    page.find_element(By.ID, "f-state").send_keys("stopped")
    click(page, "Create")
    summary = wait_until(lambda: text_of(page, "form .banner.error"), what="the API's error")
    assert summary.startswith("VALIDATION_ERROR: invalid instance name 'Bad_Name'")
    assert "DNS-1123" in page.find_element(By.ID, "f-name-error").text
    assert name.get_attribute("aria-invalid") == "true"
    name.clear()
    name.send_keys("formed")
    click(page, "Create")
    wait_until(lambda: page.current_url.endswith("#/instances/formed"), what="the instance page")
    assert reconciler.instance("formed")["desired_state"] == "stopped"  # type: ignore[index]


def test_the_state_editor_shows_problems_inline_previews_the_plan_and_saves(
    page: Any, reconciler: Reconciler
) -> None:
    page.find_element(By.LINK_TEXT, "State file").click()
    click(page, "Edit")
    editor = page.find_element(By.ID, "state-text")
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys('\n[instances.edited]\nmodel_id = "hash/384"\nprot = 8080\n')
    problems: str = wait_until(
        lambda: t if "unknown key 'prot'" in (t := text_of(page, "#state-problems")) else None,
        what="the problem to show",
    )
    bad_line = len(page.find_element(By.ID, "state-text").get_property("value").splitlines())
    assert f"line {bad_line}:1" in problems
    assert "instances.edited.prot" in problems
    assert page.find_elements(By.CSS_SELECTOR, ".gutter span.err")[0].text == str(bad_line)
    assert "No plan while the file has problems" in text_of(page, ".plan")
    assert "[instances.edited]" in text_of(page, "pre.painted .t-table")  # highlighted as typed
    assert '"hash/384"' in text_of(page, "pre.painted .t-string")

    editor.send_keys(Keys.BACK_SPACE * len("prot = 8080\n"), "max_batch_tokens = 8192\n")
    wait_until(
        lambda: "No problems" in text_of(page, "#state-problems"), what="the fix to validate"
    )
    wait_until(lambda: "start edited" in text_of(page, ".plan"), what="the plan of the edit")
    click(page, "Save")
    wait_until(lambda: "[instances.edited]" in reconciler.state_file.read_text(), what="the save")
    wait_until(lambda: page.find_elements(By.XPATH, "//button[text()='Edit']"), what="view mode")


def test_a_save_over_someone_elses_edit_is_shown_as_a_conflict(
    page: Any, reconciler: Reconciler
) -> None:
    page.find_element(By.LINK_TEXT, "State file").click()
    click(page, "Edit")
    editor = page.find_element(By.ID, "state-text")
    wait_until(lambda: editor.get_property("value"), what="the file to load")
    hand_edit = reconciler.state_file.read_text() + "# a hand edit made meanwhile\n"
    reconciler.state_file.write_text(hand_edit)
    editor.send_keys(Keys.CONTROL, Keys.END, "\n# mine\n")
    click(page, "Save")
    banner = wait_until(lambda: text_of(page, ".banner.error"), what="the conflict")
    assert "Someone else changed the state file" in banner
    assert "REVISION_MISMATCH" in banner
    assert reconciler.state_file.read_text() == hand_edit  # nothing was overwritten


def test_a_read_only_state_file_disables_every_action_and_says_why(
    page: Any, reconciler: Reconciler
) -> None:
    reconciler.create("ro-a", state="stopped")
    real = reconciler.state_file.with_name("from-git.toml")
    real.write_text(reconciler.state_file.read_text())
    os.replace(reconciler.state_file, reconciler.state_file.with_name("saved.toml"))
    reconciler.state_file.symlink_to(real)
    try:
        page.refresh()
        banner = wait_until(lambda: page.find_element(By.ID, "readonly").text, what="the banner")
        assert "read-only" in banner
        assert "symlink" in banner
        start = wait_until(
            lambda: page.find_elements(By.CSS_SELECTOR, 'button[aria-label="Start ro-a"]'),
            what="the row",
        )[0]
        assert start.get_attribute("aria-disabled") == "true"
        for link in page.find_elements(By.LINK_TEXT, "New instance"):
            assert link.get_attribute("aria-disabled") == "true"
        assert "symlink" in start.get_attribute("title")
        start.click()
        wait_until(lambda: "Read-only" in text_of(page, ".toast"), what="the refusal")
        assert reconciler.instance("ro-a")["desired_state"] == "stopped"  # type: ignore[index]
        page.find_element(By.LINK_TEXT, "Models").click()
        declare = wait_until(
            lambda: page.find_elements(By.XPATH, "//button[text()='Declare']"), what="the form"
        )[0]
        assert declare.get_attribute("aria-disabled") == "true"
    finally:
        reconciler.state_file.unlink()
        os.replace(reconciler.state_file.with_name("saved.toml"), reconciler.state_file)


def test_the_instance_page_shows_why_the_last_process_ended_and_what_it_wrote(
    page: Any, reconciler: Reconciler
) -> None:
    reconciler.create("ghost", env={"TEI_ENGINE_FAULTS": "no_such_fault=1"})
    wait_until(
        lambda: (i := reconciler.instance("ghost")) is not None and i["last_exit"],
        what="the engine to exit",
    )
    page.get(f"{reconciler.url}/ui/#/instances/ghost")
    last = wait_until(lambda: text_of(page, ".last-exit"), what="the last exit")
    assert "exited with code 1" in last
    assert "unknown fault(s) no_such_fault" in last
    # The traffic charts come on a stream of their own, which may answer after the status.
    charts = "figure.chart svg[role=img]"
    wait_until(
        lambda: len(page.find_elements(By.CSS_SELECTOR, charts)) == 4, what="the four charts"
    )
    follow = click(page, "Follow")
    assert follow.get_attribute("aria-pressed") == "true"
    wait_until(
        lambda: "no_such_fault" in text_of(page, 'pre[aria-label="Log of ghost"]'),
        what="the log",
    )


def test_a_rollout_shows_both_processes_then_its_failure_while_the_old_process_serves(
    page: Any, reconciler: Reconciler, tmp_path: Path
) -> None:
    reconciler.create("roll-a")
    wait_until(lambda: phase(page, "roll-a") == "Running", what="roll-a Running on the page")
    assert cell(page, "roll-a", "rollout") == "up to date"
    never_ready = {
        "model_id": "hash/384",
        "gpu": "none",
        "env": {"TEI_ENGINE_FAULTS": "health=fail"},
    }
    with reconciler.api() as api:
        assert api.put("/instances/roll-a", json=never_ready).status_code == 200
    wait_until(
        lambda: (
            cell(page, "roll-a", "rollout").startswith("rolling out")
            and "keeps serving" in cell(page, "roll-a", "rollout")
        ),
        what="the rollout, the old process serving",
    )
    assert phase(page, "roll-a") == "Running"
    page.get(f"{reconciler.url}/ui/#/instances/roll-a")
    roles = "table.processes tbody th"
    wait_until(lambda: text_of(page, roles) == "current\nnext", what="both processes")
    assert "Starting" in text_of(page, "table.processes tbody tr[data-role=next]")
    screenshot(page, tmp_path / "rolling.png")
    with reconciler.api() as api:
        late = {**never_ready, "progress_deadline_secs": 1}
        assert api.put("/instances/roll-a", json=late).status_code == 200
    rollout = 'section[aria-labelledby="s-rollout"]'
    wait_until(lambda: "ProgressDeadlineExceeded" in text_of(page, rollout), what="the failure")
    assert "failed" in text_of(page, rollout)
    wait_until(lambda: text_of(page, roles) == "current", what="the new process stopped")
    instance = reconciler.instance("roll-a")
    assert instance is not None
    assert instance["ready"]


def test_a_hundred_instances_fit_one_table_with_counts_and_a_filter(
    page: Any, reconciler: Reconciler, tmp_path: Path
) -> None:
    before = reconciler.state_file.read_text()
    tables = [
        f'[instances.emb-{i:03d}]\nmodel_id = "org/model-{i % 7}"\nstate = "stopped"\n'
        for i in range(100)
    ]
    reconciler.state_file.write_text(before + "\n" + "\n".join(tables))
    try:
        wait_until(
            lambda: len(page.find_elements(By.CSS_SELECTOR, 'tr[data-name^="emb-"]')) == 100,
            what="100 rows",
        )
        wait_until(lambda: phase(page, "emb-099") == "Stopped", what="the last row observed")
        assert "Stopped" in page.find_element(By.CSS_SELECTOR, ".chips").text
        screenshot(page, tmp_path / "hundred.png")
        page.find_element(By.ID, "filter").send_keys("emb-09")
        script = """return [...document.querySelectorAll('tbody tr')]
            .filter((r) => !r.hidden).map((r) => r.dataset.name)"""
        assert page.execute_script(script) == [f"emb-{i:03d}" for i in range(90, 100)]
        assert page.find_element(By.ID, "shown").text.startswith("10 of ")
    finally:
        reconciler.state_file.write_text(before)
