"""The last exit of a real engine process: why it ended and the last lines it wrote."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tei_reconciler.planner.status import InstanceStatus

from .reconciler_harness import fast_settings, instance_toml, reconciler, write_atomic
from support.model_files import minilm_files, write_tree
from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_an_engine_that_cannot_load_its_model_shows_the_engines_own_words(
    tmp_path: Path,
) -> None:
    files = minilm_files()
    files["onnx/model.onnx"] = b"not an ONNX graph"  # the layout passes the check, the load fails
    model = write_tree(tmp_path / "broken-model", files)
    settings = fast_settings(tmp_path)
    async with reconciler(settings, instance_toml("ghost", str(model))) as h:

        def crashed() -> InstanceStatus | None:
            status = h.status("ghost")
            return status if status is not None and status.last_exit is not None else None

        status: InstanceStatus = await eventually(crashed, what="the engine's exit")
        assert status.last_exit is not None
        assert status.last_exit.code == 1
        assert any("onnxruntime cannot load it" in line for line in status.last_exit.last_lines)
        assert not any(line.startswith("{") for line in status.last_exit.last_lines)  # JSON read
        backoff = [e for e in h.store.events("ghost") if e.reason == "BackOff"]
        assert "exited with code 1" in backoff[0].message
        assert "onnxruntime cannot load it" in backoff[0].message


async def test_a_process_stopped_by_the_reconciler_keeps_what_it_wrote_last(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path)
    async with reconciler(settings, instance_toml("alpha")) as h:
        await h.ready("alpha")
        write_atomic(h.state_file, instance_toml("alpha", state="stopped"))
        stopped = await h.phase_is("alpha", "Stopped")
    assert stopped.last_exit is not None
    assert stopped.last_exit.reason == "StoppedByUser"
    assert stopped.last_exit.signal in (None, signal.SIGTERM)
    assert stopped.last_exit.last_lines  # the engine logs its shutdown
