"""Adoption at boot: a process found running is kept, probed and routed as found, whatever
the state file says then, and a dead one leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tei_reconciler.desired.spec import DesiredState, InstanceSpec
from tei_reconciler.drivers.process import Found, ProcessHandle
from tei_reconciler.errors import StateFileError

from .reconciler_fakes import World, found, running

pytestmark = pytest.mark.anyio
SPEC = InstanceSpec(name="a", model_id="hash/8")


def _dead_process() -> psutil.Process:
    """A psutil handle on a process that has already exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(child.pid)
    child.wait()
    return proc


async def test_an_adopted_process_that_is_already_gone_leaves_no_probe_running(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.set_desired(SPEC)
    dead = _dead_process()
    world.driver.found = [found(SPEC, pid=dead.pid)]

    def adopt(found: Found) -> ProcessHandle:
        return ProcessHandle(
            pid=found.pid, spec_hash=found.spec_hash, clock=world.clock, psutil_proc=dead
        )

    world.driver.adopt = adopt  # type: ignore[method-assign]
    async with running(world):
        await world.phase("a", "CrashLoopBackOff")
        await world.passes(3)
        calls = world.prober.calls.get("a", 0)
        await world.passes(10)  # health_interval_secs is 0.01: a live probe loop would run
        assert world.prober.calls.get("a", 0) == calls


async def test_adopted_instances_keep_serving_while_the_state_file_is_invalid_at_boot(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)

    def broken(path: Path) -> DesiredState:
        raise StateFileError(f"{path}: cannot read: broken")

    world.controller.source.loader = broken
    world.driver.found = [found(SPEC)]
    async with running(world):
        await world.until(lambda: (s := world.status("a")) is not None and s.ready)
        status = world.status("a")
        assert status is not None
        assert status.phase.value == "Running"
        assert status.pid == 4242
        endpoint = world.table.get("a")
        assert endpoint is not None
        assert endpoint.ready  # the router keeps sending it traffic
        assert world.store.spec_errors
        assert world.driver.stopped == []


def _lose_state_file(state: Path, layout: str) -> None:
    if layout == "missing":
        state.unlink()
    else:
        state.write_bytes(b"")


@pytest.mark.parametrize("layout", ["missing", "empty"])
async def test_a_missing_or_emptied_state_file_at_boot_stops_no_adopted_instance(
    tmp_path: Path, layout: str
) -> None:
    world = World(tmp_path)
    _lose_state_file(Path(world.settings.state_file), layout)
    world.driver.found = [found(SPEC)]
    async with running(world):
        await world.until(lambda: (s := world.status("a")) is not None and s.ready)
        await world.passes(3)
        assert world.driver.stopped == []
        assert world.store.spec_errors  # and the user is told why nothing converges
