"""Lifecycle invariants: a stopped instance stays stopped, one action at a time per instance,
every start has a deadline, a removed instance leaves no ghost and no held port.

Together they rule out tei-manager's lifecycle bugs (tei-manager-anchor.md section 8.1);
orphans after a crash and sequential shutdown need real processes: see
tests/integration/test_adopt.py."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from tei_reconciler.control.source import file_loader
from tei_reconciler.desired.spec import DesiredRun, InstanceSpec, spec_hash
from tei_reconciler.drivers.ports import port_is_free
from tei_reconciler.errors import PermanentError

from .reconciler_fakes import World, found, running

pytestmark = pytest.mark.anyio
SPEC = InstanceSpec(name="a", model_id="hash/8")
STOPPED = msgspec.structs.replace(SPEC, state=DesiredRun.STOPPED)


async def test_a_stopped_instance_is_never_health_checked_back_to_life(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        world.set_desired(STOPPED)
        await world.phase("a", "Stopped")
        calls = world.prober.calls.get("a", 0)
        for _ in range(20):
            world.clock.advance(3600)
            await world.passes(1)
        assert len(world.driver.spawned) == 1
        assert world.prober.calls.get("a", 0) == calls  # no probe of a stopped instance
        assert world.status("a").phase.value == "Stopped"  # type: ignore[union-attr]


async def test_the_desired_stopped_state_survives_a_reconciler_restart(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.set_desired(STOPPED)
    world.driver.found = [found(STOPPED)]
    async with running(world):
        await world.phase("a", "Stopped")
        assert world.driver.spawned == []
        assert world.driver.stopped == ["4242"]  # the survivor of the old run is stopped


async def test_every_start_has_a_startup_deadline_including_restarts(tmp_path: Path) -> None:
    world = World(tmp_path, startup_timeout_secs=30)
    world.prober.mode["a"] = "fail"
    async with running(world):
        world.set_desired(SPEC)
        for n in (1, 2, 3):
            await world.until(lambda n=n: len(world.driver.spawns_of("a")) == n)
            assert world.status("a").phase.value == "Starting"  # type: ignore[union-attr]
            world.clock.advance(30)
            await world.passes(1)
            status = await world.phase("a", "CrashLoopBackOff")
            assert status.last_exit is not None
            assert status.last_exit.reason == "StartupTimeout"
            world.clock.advance(1000)
            await world.passes(1)


async def test_stopping_while_starting_leaves_no_poller_to_mark_it_failed(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, startup_timeout_secs=30)
    world.prober.mode["a"] = "fail"
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Starting")
        world.set_desired(STOPPED)
        await world.phase("a", "Stopped")
        world.clock.advance(10_000)
        await world.passes(3)
        status = world.status("a")
        assert status is not None
        assert status.phase.value == "Stopped"


async def test_a_start_cannot_spawn_a_second_process(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.driver.spawn_gate = anyio.Event()
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Starting")
        for _ in range(50):  # every trigger there is: file events, API writes, probes
            world.controller.mark_dirty()
            await anyio.lowlevel.checkpoint()
        await world.passes(3)
        world.driver.spawn_gate.set()
        await world.phase("a", "Running")
        await world.passes(3)
        assert len(world.driver.spawned) == 1


async def test_operations_on_one_instance_are_serialised(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        world.driver.stop_gate = anyio.Event()
        world.set_desired(STOPPED)
        await world.phase("a", "Stopping")
        changed = msgspec.structs.replace(SPEC, max_batch_tokens=99)
        world.set_desired(changed)  # start again, with a new spec, while the stop runs
        await world.passes(3)
        assert len(world.driver.spawned) == 1
        world.driver.stop_gate.set()
        await world.phase("a", "Running")
        assert [h for _, h, _ in world.driver.spawned] == [spec_hash(SPEC), spec_hash(changed)]


async def test_a_dead_process_is_not_reported_running(tmp_path: Path) -> None:
    world = World(tmp_path, health_interval_secs=3600)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        world.driver.spawns_of("a")[0].die(3)
        status = await world.phase("a", "CrashLoopBackOff")
        assert status.pid is None
        assert status.last_exit is not None
        assert status.last_exit.code == 3
        assert not world.table.get("a").ready  # type: ignore[union-attr]


async def test_running_children_are_adopted_not_duplicated(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.set_desired(SPEC)
    world.driver.found = [
        found(SPEC),
        msgspec.structs.replace(
            found(SPEC, pid=4243, spec_hash_="stale"), port=8081, prometheus_port=9101
        ),
    ]
    async with running(world):
        status = await world.phase("a", "Running")
        assert status.pid == 4242
        assert world.driver.spawned == []
        await world.until(lambda: world.driver.stopped == ["4243"])  # the duplicate


async def test_a_removed_instance_is_forgotten_only_once_its_process_is_gone(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        world.driver.stop_gate = anyio.Event()
        world.set_desired()
        status = await world.phase("a", "Stopping")
        assert status.reason == "Removed"
        world.driver.stop_gate.set()
        await world.until(lambda: world.status("a") is None)
        assert world.controller.ports.get("a") is None


async def test_a_failed_create_leaves_no_ghost(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.driver.errors["a"] = PermanentError("BinaryNotFound", "cannot execute 'tei'")
    async with running(world):
        world.set_desired(SPEC)
        status = await world.phase("a", "Failed")
        assert status.reason == "BinaryNotFound"
        world.set_desired()
        await world.until(lambda: world.status("a") is None)
        assert world.controller.ports.get("a") is None  # its ports are free again


async def test_boot_does_not_wait_for_instances_to_become_ready(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.prober.mode["a"] = "hang"
    world.set_desired(SPEC)
    async with running(world):  # returns once the first pass ran, ready or not
        assert world.status("a") is not None


async def test_the_state_file_alone_decides_what_runs_on_first_boot(tmp_path: Path) -> None:
    """tei-manager ignored its seeds or its state file depending on a flag, and overwrote the
    file it ignored. Here the file, read by the real loader, is the only source: what an
    earlier run left in the runtime directory starts nothing, and boot never rewrites it."""
    world = World(tmp_path)
    world.controller.source.loader = file_loader(world.settings.reserved_ports)
    text = (
        '[instances.a]\nmodel_id = "hash/8"\n'
        '[instances.b]\nmodel_id = "hash/8"\nstate = "stopped"\n'
    )
    leftovers(world, text, ghost="ghost")
    async with running(world):
        await world.phase("a", "Running")
        await world.phase("b", "Stopped")
        await world.passes(2)
    assert [name for name, _, _ in world.driver.spawned] == ["a"]
    assert world.status("ghost") is None
    assert world.controller.ports.get("ghost") is None
    assert await anyio.Path(world.settings.state_file).read_text() == text  # never rewritten


def lowest_free(span: tuple[int, int]) -> int:
    """The lowest port of `span` that no process holds now."""
    return next(port for port in range(*span) if port_is_free("127.0.0.1", port))


def leftovers(world: World, state: str, *, ghost: str) -> None:
    """A state file, and the port book of an earlier run that still names `ghost`."""
    Path(world.settings.state_file).write_text(state)
    book = Path(world.settings.runtime_dir) / "ports.json"
    book.parent.mkdir(parents=True, exist_ok=True)
    first = world.settings.instance_port_range[0]
    leftover = {"port": first, "prometheus_port": world.settings.prometheus_port_range[0]}
    book.write_text(json.dumps({"ports": {ghost: leftover}}))
    world.controller.ports._load()


async def test_a_hung_probe_delays_no_other_instance_and_restarts_reset_the_count(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, failure_threshold=2)
    b = msgspec.structs.replace(SPEC, name="b")
    async with running(world):
        world.set_desired(SPEC, b)
        await world.phase("a", "Running")
        await world.phase("b", "Running")
        world.prober.mode["a"] = "hang"
        before = world.prober.calls.get("b", 0)
        await world.until(lambda: world.prober.calls.get("b", 0) > before + 20)
        status = await world.phase("a", "CrashLoopBackOff")
        assert status.last_exit is not None
        assert status.last_exit.reason == "LivenessFailed"
        world.prober.mode["a"] = "ok"
        world.clock.advance(10)
        await world.passes(1)
        await world.until(lambda: (s := world.status("a")) is not None and s.ready)
        assert world.status("a").health_check_failures == 0  # type: ignore[union-attr]


async def test_ports_of_an_instance_removed_while_no_reconciler_ran_are_freed(
    tmp_path: Path,
) -> None:
    """The ports booked for the removed instance are the first a new one would get (the
    lowest free ones: a process of another test may hold a port of the range)."""
    world = World(tmp_path)
    first = lowest_free(world.settings.instance_port_range)
    prometheus = lowest_free(world.settings.prometheus_port_range)
    book = Path(world.settings.runtime_dir) / "ports.json"
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(json.dumps({"ports": {"gone": {"port": first, "prometheus_port": prometheus}}}))
    world.controller.ports._load()
    async with running(world):
        world.set_desired(SPEC)
        status = await world.phase("a", "Running")
        assert (status.port, status.prometheus_port) == (first, prometheus)
        assert world.controller.ports.get("gone") is None
