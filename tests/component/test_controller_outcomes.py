"""Every failure to act becomes an instance outcome; none takes the controller down."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import msgspec
import pytest

from tei_reconciler.desired.spec import DesiredState, InstanceSpec
from tei_reconciler.planner.observed import Busy
from tei_reconciler.planner.plan import Stop

from .reconciler_fakes import World, running

pytestmark = pytest.mark.anyio
SPEC = InstanceSpec(name="a", model_id="hash/8")


class Boom(OSError):
    pass


async def test_an_unexpected_spawn_error_fails_that_instance_and_no_other(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.driver.errors["a"] = Boom(errno.EIO, "Input/output error")
    async with running(world):
        world.set_desired(SPEC, msgspec.structs.replace(SPEC, name="b"))
        failed = await world.phase("a", "Failed")
        assert failed.reason == "StartFailed"
        assert "Input/output error" in failed.message
        await world.phase("b", "Running")
        del world.driver.errors["a"]
        world.clock.advance(10)  # the first slow retry
        await world.passes(1)
        await world.phase("a", "Running")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
async def test_a_full_disk_at_start_is_the_named_reason_disk_full(
    tmp_path: Path, code: int
) -> None:
    world = World(tmp_path)
    world.driver.errors["a"] = OSError(code, os.strerror(code), "/data/logs/a.log")
    async with running(world):
        world.set_desired(SPEC)
        failed = await world.phase("a", "Failed")
        assert failed.reason == "DiskFull"
        assert failed.message == f"{os.strerror(code)}: /data/logs/a.log"
        assert failed.backoff_until is not None  # retried slowly, as space may come back
        (event,) = [e for e in world.store.events("a") if e.reason == "DiskFull"]
        assert event.type == "Warning"


async def test_preview_lists_what_a_pass_would_do_without_doing_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        changed = msgspec.structs.replace(SPEC, max_batch_tokens=64)
        added = msgspec.structs.replace(SPEC, name="b")
        actions = world.controller.preview(DesiredState(instances={"a": changed, "b": added}))
        assert [(type(a).__name__, a.name) for a in actions] == [("StartNext", "a"), ("Start", "b")]
        await world.passes(2)
        assert len(world.driver.spawned) == 1  # nothing was done


async def test_a_stop_that_finds_the_process_already_gone_still_triggers_the_next_pass(
    tmp_path: Path,
) -> None:
    # Resync an hour, back-off five minutes: only a trigger can make the next pass.
    world = World(tmp_path, backoff_initial_secs=300.0)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        world.driver.spawns_of("a")[0].die(1)
        await world.phase("a", "CrashLoopBackOff")
        # A removal planned just before the exit was noticed: the stop finds no process.
        rt = world.controller.runtimes["a"]
        rt.busy = Busy.STOPPING
        before = world.controller.passes
        await world.controller.actuator.stop(rt, Stop(name="a", reason="Removed", forget=True))
        assert rt.busy is None
        await world.until(lambda: world.controller.passes > before, "a pass")
