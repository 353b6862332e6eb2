"""How the last process of an instance ended, in words, with the last lines it wrote."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import get_args

from tei_reconciler.drivers.logtail import LINE_CHARS, LINES, MAX_BYTES, last_lines, redact
from tei_reconciler.planner.plan import StopReason
from tei_reconciler.planner.status import STOPPED_BECAUSE, ExitInfo, exit_summary, signal_name


def ended(**fields: object) -> ExitInfo:
    values: dict[str, object] = {"code": None, "signal": None, "at": 0.0, "reason": "Error"}
    values.update(fields)
    return ExitInfo(**values)  # type: ignore[arg-type]


def test_an_exit_is_told_by_its_code_or_by_the_signals_name() -> None:
    assert exit_summary(ended(code=1)) == "exited with code 1"
    killed = exit_summary(ended(signal=signal.SIGKILL, reason="Killed"))
    assert killed == "killed by SIGKILL (signal 9), a signal the reconciler did not send"
    assert signal_name(signal.SIGSEGV) == "SIGSEGV"
    assert signal_name(200) == "signal 200"


def test_a_stop_by_the_reconciler_says_why_it_stopped_the_process() -> None:
    text = exit_summary(ended(signal=signal.SIGTERM, reason="LivenessFailed"))
    assert text == (
        "stopped by the reconciler because failure_threshold health checks in a row failed: "
        "killed by SIGTERM (signal 15)"
    )
    assert set(STOPPED_BECAUSE) == set(get_args(StopReason))


def test_the_last_lines_are_those_of_the_process_that_ended_not_its_predecessor(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.log"
    log.write_text("old process line\n")
    since = log.stat().st_size
    record = {"timestamp": "t", "level": "ERROR", "message": "model `x/y` is not available"}
    with log.open("a") as f:
        f.write("starting\n\n" + json.dumps(record) + "\n")
    assert last_lines(log, since=since) == ("starting", "ERROR model `x/y` is not available")


def test_a_rotated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("after rotation\n")
    assert last_lines(log, since=10_000) == ("after rotation",)
    assert last_lines(tmp_path / "missing.log") == ()


def test_the_tail_is_bounded_in_lines_bytes_and_line_length(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    lines = [f"line {i} " + "x" * 50 for i in range(1000)]
    log.write_text("\n".join(lines) + "\n" + "y" * (LINE_CHARS * 3) + "\n")
    tail = last_lines(log)
    assert len(tail) == LINES
    assert tail[-2] == lines[-1]
    assert len(tail[-1]) == LINE_CHARS
    assert tail[-1].endswith("…")
    huge = tmp_path / "huge.log"
    huge.write_text("z" * (MAX_BYTES * 4))  # one endless line: nothing whole to show
    assert last_lines(huge) == ()


def test_credentials_in_the_last_lines_are_masked() -> None:
    samples = {
        'Args { model_id: "m", api_key: Some("s3cr3t"), hf_token: None }': "s3cr3t",
        '{"api_key":"s3cr3t"}': "s3cr3t",
        "running with --api-key s3cr3t --port 8080": "s3cr3t",
        "request failed: Authorization: Bearer abc.def-ghi": "abc.def-ghi",
        "401 for hf_abcdefghijklmnopqrstu": "abcdefghijklmnopqrstu",
        "password=hunter2": "hunter2",
    }
    for line, secret in samples.items():
        masked = redact(line)
        assert secret not in masked, masked
        assert "***" in masked
    assert redact("model not available") == "model not available"
