"""Faults the reconciler must survive: hangs, stubborn children, foreign ports, missing GPUs
and binaries, and broken state files; each with a clear reason and no effect on others."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import psutil
import pytest

from .reconciler_harness import (
    fast_settings,
    instance_toml,
    passes,
    reconciler,
    script,
    write_atomic,
)
from support.processes import children
from support.waiting import eventually

pytestmark = pytest.mark.anyio

STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    while True:
        time.sleep(1)
with open(os.environ["GRANDCHILD_PID_FILE"], "w") as f:
    f.write(str(child))
while True:
    time.sleep(1)
"""


async def test_a_hung_instance_is_restarted_after_failure_threshold_probes(tmp_path: Path) -> None:
    settings = fast_settings(
        tmp_path, health_timeout_secs=1.0, failure_threshold=2, stop_grace_secs=0.5
    )
    async with reconciler(settings, instance_toml("alpha")) as h:
        first = await h.ready("alpha")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGSTOP)  # alive, but answers nothing
        unhealthy = await eventually(
            lambda: (s := h.status("alpha")) is not None and not s.ready and s,
            what="the instance out of routing",
        )
        # Ready is lost only after failure_threshold probes failed in a row, not at the first.
        assert unhealthy.health_check_failures >= 2 or unhealthy.phase.value != "Running"
        assert h.table.get("alpha") is not None
        assert not h.table.get("alpha").ready  # type: ignore[union-attr]
        again = await eventually(
            lambda: (s := h.status("alpha")) is not None and s.ready and s.pid != first.pid and s,
            what="a replacement",
        )
        assert again.last_exit is not None
        assert again.last_exit.reason == "LivenessFailed"
        assert again.restarts == 1
        assert not psutil.pid_exists(first.pid)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_with_its_grandchildren(
    tmp_path: Path,
) -> None:
    binary = script(tmp_path, "stubborn-tei", STUBBORN)
    pid_file = tmp_path / "grandchild.pid"
    settings = fast_settings(tmp_path, tei_binary=str(binary), stop_grace_secs=0.5)
    spec = instance_toml("alpha", env={"GRANDCHILD_PID_FILE": str(pid_file)})
    async with reconciler(settings, spec) as h:
        await eventually(lambda: pid_file.exists() and pid_file.read_text(), what="the grandchild")
        grandchild = int(pid_file.read_text())
        status = h.status("alpha")
        assert status is not None
        assert status.pid is not None
        leader = status.pid
        write_atomic(
            h.state_file, spec.replace("[instances.alpha]", '[instances.alpha]\nstate = "stopped"')
        )
        stopped = await h.phase_is("alpha", "Stopped")
        assert stopped.last_exit is not None
        assert stopped.last_exit.signal == signal.SIGKILL
        assert not psutil.pid_exists(leader)
        await eventually(lambda: not psutil.pid_exists(grandchild), what="the grandchild gone")


async def test_a_port_held_by_a_foreign_process_fails_only_that_instance(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        state = instance_toml("alpha", port=port) + instance_toml("beta")
        async with reconciler(settings, state) as h:
            failed = await h.phase_is("alpha", "Failed")
            assert failed.reason == "PortInUse"
            assert str(port) in failed.message
            assert f"pid {os.getpid()}" in failed.message
            assert failed.backoff_until is not None  # retried, slowly
            await h.ready("beta")
            squatter.close()
            await h.ready("alpha")  # the port is free again: the retry succeeds


async def test_a_gpu_the_host_lacks_fails_only_that_instance(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    state = instance_toml("alpha", gpu=99) + instance_toml("beta", gpu="none")
    async with reconciler(settings, state) as h:
        failed = await h.phase_is("alpha", "Failed")
        assert failed.reason == "GpuNotFound"
        assert "99" in failed.message
        ready = await h.ready("beta")
        assert ready.pid is not None
        assert psutil.Process(ready.pid).environ()["CUDA_VISIBLE_DEVICES"] == ""
        assert not children(h.controller.actuator.owner, "alpha")


async def test_a_missing_binary_is_a_clear_failure_retried_slowly(tmp_path: Path) -> None:
    settings = fast_settings(
        tmp_path, tei_binary=str(tmp_path / "no-such-tei"), resync_interval_secs=0.1
    )
    async with reconciler(settings, instance_toml("alpha")) as h:
        failed = await h.phase_is("alpha", "Failed")
        assert failed.reason == "BinaryNotFound"
        assert "no-such-tei" in failed.message
        await passes(h.controller, 10)
        # Retries back off (0.3 s doubling): ten passes are far fewer than ten attempts.
        attempts = [e.count for e in h.store.events("alpha") if e.reason == "BinaryNotFound"]
        assert attempts
        assert attempts[0] < 10


async def test_a_corrupt_file_stops_nothing_and_a_fixed_one_converges(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, resync_interval_secs=0.2)
    async with reconciler(settings, instance_toml("alpha")) as h:
        before = await h.ready("alpha")
        write_atomic(h.state_file, instance_toml("alpha") + "[instances.beta\nmodel_id = 1\n")
        await eventually(lambda: h.store.spec_errors, what="the error to be reported")
        assert "state.toml" in h.store.spec_errors[0]
        await passes(h.controller, 3)
        status = h.status("alpha")
        assert status is not None
        assert status.ready
        assert status.pid == before.pid
        spec_valid = {c.type: c for c in status.conditions}["SpecValid"]
        assert spec_valid.status == "False"
        assert any(e.reason == "InvalidSpec" for e in h.store.events(""))
        write_atomic(h.state_file, instance_toml("alpha") + instance_toml("beta"))
        await h.ready("beta")
        assert h.store.spec_errors == ()
        after = h.status("alpha")
        assert after is not None
        assert after.pid == before.pid
        assert {c.type: c.status for c in after.conditions}["SpecValid"] == "True"


async def test_an_invalid_file_at_boot_starts_nothing_and_stops_nothing(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, resync_interval_secs=0.1)
    async with reconciler(settings, "[instances.alpha]\nmodel_id = 7\n") as h:
        await passes(h.controller, 2)
        assert h.store.spec_errors
        assert h.status("alpha") is None
        assert not children(h.controller.actuator.owner)


def _not_a_program(tmp: Path) -> Path:
    """An executable file that the kernel cannot run (no shebang, not a binary)."""
    path = tmp / "tei-garbage"
    path.write_bytes(b"\x00\x01\x02 not a program\n")
    path.chmod(0o755)
    return path


async def test_a_binary_the_kernel_cannot_execute_is_a_clear_binary_failure(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path, tei_binary=str(_not_a_program(tmp_path)))
    async with reconciler(settings, instance_toml("alpha")) as h:
        failed = await h.phase_is("alpha", "Failed")
        assert failed.reason == "BinaryNotFound"
        assert "tei-garbage" in failed.message
        assert "Exec format error" in failed.message
