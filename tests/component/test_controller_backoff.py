"""Crash loops, with an injected clock: hours of backoff in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.desired.spec import InstanceSpec

from .reconciler_fakes import World, running

pytestmark = pytest.mark.anyio
SPEC = InstanceSpec(name="a", model_id="hash/8")


async def crash_and_measure(world: World) -> float:
    """Kill the running process; return the backoff shown in status, in seconds."""
    handle = world.driver.spawns_of("a")[-1]
    handle.die(1)
    status = await world.phase("a", "CrashLoopBackOff")
    assert status.backoff_until is not None
    assert status.last_exit is not None
    assert status.last_exit.code == 1
    return round(status.backoff_until - world.clock.wall(), 3)


async def test_repeated_crashes_wait_longer_each_time_up_to_the_cap(tmp_path: Path) -> None:
    world = World(tmp_path, backoff_initial_secs=10, backoff_max_secs=60)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        waits = []
        for n in range(1, 6):
            waits.append(await crash_and_measure(world))
            world.clock.advance(waits[-1] - 0.5)
            await world.passes(2)
            assert len(world.driver.spawns_of("a")) == n  # not yet: still backing off
            world.clock.advance(0.5)
            await world.passes(1)
            await world.until(lambda n=n: len(world.driver.spawns_of("a")) == n + 1)
            await world.phase("a", "Running")
        assert waits == [10, 20, 40, 60, 60]
        status = world.status("a")
        assert status is not None
        assert status.restarts == 5


async def test_ten_healthy_minutes_reset_the_backoff(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        assert await crash_and_measure(world) == 10
        world.clock.advance(10)
        await world.passes(1)
        await world.until(lambda: world.status("a") and world.status("a").ready)  # type: ignore[union-attr]
        assert await crash_and_measure(world) == 20
        world.clock.advance(20)
        await world.passes(1)
        await world.until(lambda: world.status("a") and world.status("a").ready)  # type: ignore[union-attr]
        world.clock.advance(600)  # healthy for ten minutes
        assert await crash_and_measure(world) == 10


async def test_a_failed_liveness_probe_restarts_with_backoff_too(tmp_path: Path) -> None:
    world = World(tmp_path, failure_threshold=3)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        await world.until(lambda: world.status("a") and world.status("a").ready)  # type: ignore[union-attr]
        world.prober.mode["a"] = "fail"
        status = await world.phase("a", "CrashLoopBackOff")
        assert status.last_exit is not None
        assert status.last_exit.reason == "LivenessFailed"
        assert status.backoff_until is not None
        assert round(status.backoff_until - world.clock.wall()) == 10
        assert len(world.driver.stopped) == 1
