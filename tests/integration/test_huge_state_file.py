"""A huge invalid state file never stalls the process: it is parsed off the event loop (the API
keeps answering meanwhile), reports a bounded number of problems and logs one line per read,
and above `max_state_bytes` it is refused without being read."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import anyio
import pytest

from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.desired.statefile import MAX_PROBLEMS

from .reconciler_harness import (
    fast_settings,
    instance_toml,
    passes,
    reconciler,
    write_atomic,
)
from support.waiting import eventually

pytestmark = pytest.mark.anyio

KEYS = 150_000  # about 3 MB; tomllib alone takes a second or more to parse it


def huge_invalid_state(keys: int) -> str:
    body = "".join(f"unknown_key_{i} = 1\n" for i in range(keys))
    return instance_toml("alpha") + body


async def test_health_answers_while_a_multi_megabyte_file_is_parsed_and_problems_are_capped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast_settings(tmp_path, max_state_bytes=64 * 1024 * 1024)
    async with (
        reconciler(settings, instance_toml("alpha"), with_front_ends=True) as h,
        h.api() as api,
    ):
        before = await h.ready("alpha")
        source = h.controller.source
        real = source.loader
        parsing, parsed = threading.Event(), threading.Event()

        def observed(path: Path) -> DesiredState:
            parsing.set()
            try:
                return real(path)
            finally:
                parsed.set()

        source.loader = observed
        caplog.clear()
        with caplog.at_level(logging.INFO):
            write_atomic(h.state_file, huge_invalid_state(KEYS))
            answered_during_parse = 0
            with anyio.fail_after(120):
                while not parsed.is_set():
                    response = await api.get("/health")
                    assert response.status_code == 200
                    if parsing.is_set() and not parsed.is_set():
                        answered_during_parse += 1
                    await anyio.sleep(0.05)
            errors = await eventually(lambda: h.store.spec_errors, what="the problems")
            await passes(h.controller, 2)
        assert answered_during_parse > 0, "the event loop was blocked while the file was parsed"

        assert len(errors) == MAX_PROBLEMS + 1
        assert errors[-1].endswith(
            f"... and {KEYS - MAX_PROBLEMS} more problems (only the first {MAX_PROBLEMS} shown)"
        )
        plan = (await api.get("/plan")).json()
        assert len(plan["errors"]) == MAX_PROBLEMS + 1
        logged = [r for r in caplog.records if "unknown_key_" in r.getMessage()]
        assert len(logged) == 1, "one log line per read, not one per problem"
        assert len(logged[0].getMessage()) < 50_000
        status = h.status("alpha")
        assert status is not None
        assert (status.pid, status.ready) == (before.pid, True)  # the last good state stays


async def test_a_file_above_max_state_bytes_is_refused_unread_and_changes_nothing(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path, max_state_bytes=64 * 1024)
    async with (
        reconciler(settings, instance_toml("alpha"), with_front_ends=True) as h,
        h.api() as api,
    ):
        before = await h.ready("alpha")
        write_atomic(h.state_file, huge_invalid_state(10_000))
        (error,) = await eventually(lambda: h.store.spec_errors, what="the refusal")
        assert error.startswith(f"{h.state_file} is ")
        assert error.endswith(" KiB, more than max_state_bytes (64.0 KiB); not read")
        ready = (await api.get("/ready")).json()
        assert (ready["status"], ready["spec_valid"]) == ("ready", False)
        state = await api.get("/state")
        assert state.status_code == 503
        assert "more than max_state_bytes" in state.json()["error"]
        listed = (await api.get("/instances")).json()
        assert [i["name"] for i in listed] == ["alpha"]
        status = h.status("alpha")
        assert status is not None
        assert status.pid == before.pid
