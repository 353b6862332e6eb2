"""No error inside one instance's task ends the control loop: a probe, a start, a stop or an
exit watcher that raises (a stray cancellation included, as grpc.aio raises on a closed
channel) becomes an outcome of that instance, and every other instance carries on."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import msgspec
import pytest

from tei_reconciler.control.actuator import FOLLOW_RETRY_SECS
from tei_reconciler.desired.spec import DesiredRun, InstanceSpec
from tei_reconciler.tasks import PartEnded

from .reconciler_fakes import World, running

pytestmark = pytest.mark.anyio
A = InstanceSpec(name="a", model_id="hash/8")
B = InstanceSpec(name="b", model_id="hash/8")


def stray() -> BaseException:
    """A cancellation no cancel scope asked for."""
    return anyio.get_cancelled_exc_class()()


async def test_a_probe_raising_a_stray_cancellation_is_a_failed_probe_and_the_loop_lives_on(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, failure_threshold=2)
    async with running(world):
        world.set_desired(A, B)
        await world.phase("a", "Running")
        world.prober.mode["a"] = "stray"
        status = await world.phase("a", "CrashLoopBackOff")  # failed probes: a restart is due
        assert "probe error: CancelledError" in status.probes[-1].message
        world.prober.mode["a"] = "ok"
        world.set_desired(A, B, InstanceSpec(name="c", model_id="hash/8"))
        await world.phase("c", "Running")  # the loop still acts
        assert (await world.phase("b", "Running")).ready


async def test_a_probe_cancelled_under_a_library_that_replaces_the_cancellation_ends_cleanly(
    tmp_path: Path,
) -> None:
    """grpc.aio answers a cancelled call with a CancelledError of its own, which anyio's scope
    does not recognise: a timed-out probe is still a failed probe, and a stop still ends the
    probe loop quietly."""
    world = World(tmp_path, failure_threshold=2)
    async with running(world):
        world.set_desired(A)
        await world.phase("a", "Running")
        world.prober.mode["a"] = "hang-grpc"
        status = await world.phase("a", "CrashLoopBackOff")  # two timeouts: restarted
        assert "no answer within" in status.probes[-1].message
        assert world.prober.open["a"] == 0  # the probe loop of the stopped process ended
        assert not [e for e in world.store.events("a") if e.reason == "InternalError"]


async def test_a_stop_ended_by_a_stray_cancellation_is_an_event_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(A, B)
        await world.phase("a", "Running")
        world.driver.stop_errors = [stray()]
        world.set_desired(msgspec.structs.replace(A, state=DesiredRun.STOPPED), B)
        await world.phase("a", "Stopped")
        assert len(world.driver.stopped) == 2  # the failed stop, then one that worked
        (event,) = [e for e in world.store.events("a") if e.reason == "InternalError"]
        assert event.message.startswith("stop failed")
        assert (await world.phase("b", "Running")).ready
    logged = [r for r in caplog.records if "stop of a failed unexpectedly" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None


async def test_a_start_ended_by_a_stray_cancellation_leaves_the_instance_to_the_next_pass(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.driver.errors["a"] = stray()
    async with running(world):
        world.set_desired(A, B)
        await world.phase("b", "Running")
        await world.until(
            lambda: any(e.reason == "InternalError" for e in world.store.events("a")),
            "an InternalError event of a",
        )
        del world.driver.errors["a"]
        world.controller.mark_dirty()
        await world.phase("a", "Running")


async def test_an_exit_watcher_that_fails_is_started_again_and_still_sees_the_exit(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.driver.watch_errors["a"] = [RuntimeError("a bug in the watcher")]
    async with running(world):
        world.set_desired(A)
        await world.phase("a", "Running")
        await world.until(
            lambda: any(e.reason == "InternalError" for e in world.store.events("a")),
            "an InternalError event of a",
        )
        (handle,) = world.driver.spawns_of("a")
        handle.die(3)  # while nothing watches it: the watcher followed again must see it
        with anyio.fail_after(FOLLOW_RETRY_SECS + 30):
            status = await world.phase("a", "CrashLoopBackOff")
        assert status.last_exit is not None
        assert status.last_exit.code == 3


async def test_a_deleted_and_recreated_instance_probes_only_its_new_process(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    async with running(world):
        for _ in range(20):
            world.set_desired(A)
            await world.phase("a", "Running")
            world.set_desired()
            await world.until(lambda: world.status("a") is None, "a removed")
        await world.until(lambda: world.prober.open["a"] == 0, "every probe of a closed")
        world.set_desired(A)
        status = await world.phase("a", "Running")
        assert status.ready
        assert world.prober.open["a"] == 1


async def test_a_stray_cancellation_reaching_the_loops_task_group_is_a_crash_keeping_instances(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, on_shutdown="stop")

    async def stray_task() -> None:
        raise stray()

    async def run_until_the_stray_task() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(world.controller.run)
            world.set_desired(A)
            await world.phase("a", "Running")
            assert world.controller._tg is not None
            world.controller._tg.start_soon(stray_task)  # the old bug, bypassing the guard
            await anyio.sleep_forever()

    with pytest.raises(BaseExceptionGroup) as raised:
        await run_until_the_stray_task()
    assert raised.group_contains(PartEnded)
    assert world.driver.stopped == []  # a crash leaves the instances for the next reconciler
