"""Surge rollouts through the controller, with fakes behind its seams: which processes run,
which one the routing table points at, what the status and the events say, step by step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from tei_reconciler import metrics
from tei_reconciler.desired.spec import DesiredRun, InstanceSpec, spec_hash
from tei_reconciler.errors import PermanentError
from tei_reconciler.planner.status import InstanceStatus, StoreChange

from .reconciler_fakes import FakeHandle, World, found, running

pytestmark = pytest.mark.anyio
OLD = InstanceSpec(name="a", model_id="hash/8")
NEW = msgspec.structs.replace(OLD, max_batch_tokens=1024)
NEWER = msgspec.structs.replace(OLD, max_batch_tokens=2048)


def condition(status: InstanceStatus, type_: str) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == type_)
    return found.status, found.reason


def progressing_message(status: InstanceStatus) -> str:
    return next(c.message for c in status.conditions if c.type == "Progressing")


def reasons(world: World) -> list[str]:
    return [e.reason for e in world.store.events("a")]


def rollouts(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("tei_reconciler_rollouts_total", {"outcome": outcome})
    return value or 0.0


@asynccontextmanager
async def watching_ready(world: World) -> AsyncIterator[list[InstanceStatus]]:
    """Every status of `a` published while the block runs (the test then looks at them)."""
    seen: list[InstanceStatus] = []
    async with anyio.create_task_group() as tg:
        with world.store.subscribe() as changes:

            async def collect() -> None:
                async for change in changes:
                    if isinstance(change, StoreChange) and change.status is not None:
                        seen.append(change.status)

            tg.start_soon(collect)
            yield seen
            tg.cancel_scope.cancel()


async def serving(world: World, spec: InstanceSpec = OLD) -> InstanceStatus:
    world.set_desired(spec)
    status: InstanceStatus = await world.until(
        lambda: (
            (s := world.status("a")) is not None
            and s.ready
            and s.spec_hash == spec_hash(s.spec)
            and s
        ),
        "a Ready",
    )
    return status


async def new_process(world: World, spec: InstanceSpec, probe: str = "fail") -> FakeHandle:
    """Desire `spec` while `a` serves; its new process once spawned beside the serving one,
    answering its probes with `probe` ("fail": not Ready yet)."""
    world.prober.by_hash[spec_hash(spec)] = probe
    world.set_desired(spec)
    await world.until(lambda: len(world.driver.spawns_of("a")) == 2, "the new process")
    return world.driver.spawns_of("a")[1]


async def rollout_failed(world: World, reason: str, what: str = "condition") -> InstanceStatus:
    """`a`'s status once its rollout ended with `reason` (Progressing False)."""
    status: InstanceStatus = await world.until(
        lambda: (
            (s := world.status("a")) is not None
            and condition(s, "Progressing") == ("False", reason)
            and s
        ),
        what,
    )
    return status


async def serving_alone(world: World, spec: InstanceSpec) -> InstanceStatus:
    """`a`'s status once a process of `spec` serves alone."""
    status: InstanceStatus = await world.until(
        lambda: (
            (s := world.status("a")) is not None
            and s.spec_hash == spec_hash(spec)
            and len(s.processes) == 1
            and s
        )
    )
    return status


async def test_a_changed_spec_starts_beside_the_old_process_and_switches_once_it_is_ready(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    async with running(world):
        first = await serving(world)
        old_endpoint = world.table.get("a")
        assert old_endpoint is not None
        async with watching_ready(world) as seen:
            new = await new_process(world, NEW)  # not Ready yet
            rolling = await world.until(
                lambda: (s := world.status("a")) is not None and len(s.processes) == 2 and s
            )
            assert [(p.role, p.state) for p in rolling.processes] == [
                ("current", "Ready"),
                ("next", "Starting"),
            ]
            assert rolling.pid == first.pid  # the old process still serves
            assert condition(rolling, "Progressing") == ("True", "RollingUpdate")
            assert world.table.get("a") == old_endpoint
            assert world.driver.stopped == []
            world.prober.by_hash.clear()  # the new process answers its probe
            done = await serving_alone(world, NEW)
        assert done.pid == new.pid
        assert world.driver.stopped == [str(first.pid)]
        endpoint = world.table.get("a")
        assert endpoint is not None
        assert endpoint.ready
        assert endpoint.port != old_endpoint.port
        assert endpoint.generation != old_endpoint.generation
        assert all(s.ready for s in seen), "the instance was never without a Ready process"
        assert condition(done, "Progressing")[0] == "False"
        assert done.last_exit is not None
        assert done.last_exit.reason == "Replaced"
        steps = ["NewProcessStarted", "NewProcessReady", "Switched", "RolloutComplete"]
        assert [r for r in reasons(world) if r in steps] == steps


async def test_a_new_process_that_crashes_leaves_the_old_one_serving_and_is_retried(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, backoff_initial_secs=10)
    async with running(world):
        first = await serving(world)
        failed_before = rollouts("failed")
        (await new_process(world, NEW)).die(3)
        status = await rollout_failed(world, "RolloutFailed")
        assert status.ready
        assert status.pid == first.pid
        assert "exited with code 3" in progressing_message(status)
        assert status.rollout_failure is not None
        assert status.rollout_failure.spec_hash == spec_hash(NEW)
        assert world.driver.stopped == []
        assert "RolloutFailed" in reasons(world)
        assert rollouts("failed") == failed_before + 1
        await world.passes(3)
        assert len(world.driver.spawns_of("a")) == 2  # backing off
        world.clock.advance(10)
        await world.passes(1)
        await world.until(lambda: len(world.driver.spawns_of("a")) == 3, "the retry")


async def test_a_new_process_not_ready_by_the_progress_deadline_is_stopped(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    async with running(world):
        first = await serving(world)
        new = await new_process(world, msgspec.structs.replace(NEW, progress_deadline_secs=5))
        world.clock.advance(6)
        await world.passes(1)
        status = await rollout_failed(world, "ProgressDeadlineExceeded")
        assert world.driver.stopped == [str(new.pid)]
        assert status.pid == first.pid
        assert status.ready


async def test_a_new_process_that_refuses_the_probes_key_fails_the_rollout_at_once(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, backoff_initial_secs=10)
    async with running(world):
        first = await serving(world)
        new = await new_process(world, NEW, probe="refuse")
        status = await rollout_failed(
            world, "RolloutFailed", "the rollout to fail without waiting for any deadline"
        )
        assert world.driver.stopped == [str(new.pid)]
        assert status.pid == first.pid
        assert status.ready
        assert status.phase == "Running"
        assert "refused the probe" in progressing_message(status)
        assert "Unauthenticated" in reasons(world)


async def test_a_further_edit_replaces_the_rollout_under_way(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        first = await serving(world)
        obsolete = await new_process(world, NEW)
        world.set_desired(NEWER)
        done = await serving_alone(world, NEWER)
        assert world.driver.stopped == [str(obsolete.pid), str(first.pid)]
        assert [h for _, h, _ in world.driver.spawned] == [
            spec_hash(OLD),
            spec_hash(NEW),
            spec_hash(NEWER),
        ]
        assert done.ready


@pytest.mark.parametrize("how", ["stopped", "deleted"])
async def test_stopping_or_deleting_mid_rollout_stops_both_processes(
    tmp_path: Path, how: str
) -> None:
    world = World(tmp_path)
    async with running(world):
        first = await serving(world)
        new = await new_process(world, NEW)
        if how == "stopped":
            world.set_desired(msgspec.structs.replace(NEW, state=DesiredRun.STOPPED))
            await world.phase("a", "Stopped")
        else:
            world.set_desired()
            await world.until(lambda: world.status("a") is None, "a forgotten")
        assert world.driver.stopped == [str(new.pid), str(first.pid)]
        endpoint = world.table.get("a")
        assert endpoint is None or not endpoint.ready


async def test_a_new_process_that_cannot_start_is_a_failed_rollout(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        first = await serving(world)
        world.driver.errors["a"] = PermanentError("OutOfMemory", "CUDA out of memory")
        world.set_desired(NEW)
        status = await rollout_failed(world, "RolloutFailed")
        assert status.pid == first.pid
        assert status.ready
        assert status.phase.value == "Running"
        assert "CUDA out of memory" in progressing_message(status)


async def test_a_reconciler_restarted_mid_rollout_adopts_both_processes_and_finishes(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.set_desired(NEW)
    old = found(OLD, pid=4242)
    new = msgspec.structs.replace(found(NEW, pid=4343), port=8081, prometheus_port=9101)
    world.driver.found = [old, new]
    async with running(world):
        done = await world.until(
            lambda: (
                (s := world.status("a")) is not None
                and s.pid == 4343
                and len(s.processes) == 1
                and s
            )
        )
        assert done.ready
        assert world.driver.spawned == []  # nothing started anew
        assert world.driver.stopped == ["4242"]  # only the old one, once the new one serves
        endpoint = world.table.get("a")
        assert endpoint is not None
        assert endpoint.port == 8081
        adopted = [e.message for e in world.store.events("a") if e.reason == "Adopted"]
        assert any("unfinished rollout" in m for m in adopted)
