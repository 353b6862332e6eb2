"""Lifecycle edge cases found in review: each one a way a process or a task could leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tei_reconciler.control.source import DesiredSource, file_loader
from tei_reconciler.desired.spec import DesiredState, InstanceSpec
from tei_reconciler.drivers.process import Found, ProcessHandle
from tei_reconciler.errors import StateFileError
from tei_reconciler.planner.observed import Busy
from tei_reconciler.planner.plan import Stop
from tei_reconciler.store import StatusStore

from .reconciler_fakes import FakeClock, World, found, running

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


async def test_ports_of_an_instance_removed_while_no_reconciler_ran_are_freed(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    first = world.settings.instance_port_range[0]
    prometheus = world.settings.prometheus_port_range[0]
    book = Path(world.settings.runtime_dir) / "ports.json"
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(json.dumps({"ports": {"gone": {"port": first, "prometheus_port": prometheus}}}))
    world.controller.ports._load()
    async with running(world):
        world.set_desired(SPEC)
        status = await world.phase("a", "Running")
        assert (status.port, status.prometheus_port) == (first, prometheus)
        assert world.controller.ports.get("gone") is None


async def test_a_file_truncated_between_the_change_check_and_the_load_keeps_every_instance(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.toml"
    path.write_text('[instances.a]\nmodel_id = "o/m"\n')
    store = StatusStore()
    real = file_loader(frozenset())
    source = DesiredSource(path, real, store=store, clock=FakeClock())
    assert set((await source.refresh()).instances) == {"a"}  # type: ignore[union-attr]

    def editor_truncates_meanwhile(p: Path) -> DesiredState:
        p.write_bytes(b"")  # an in-place save: truncate first, write later
        return real(p)

    path.write_text('[instances.a]\nmodel_id = "o/m"\n[instances.b]\nmodel_id = "o/m"\n')
    source.loader = editor_truncates_meanwhile
    desired = await source.refresh()
    assert desired is not None
    assert set(desired.instances) == {"a"}  # the last good state, not "nothing"
    assert "empty" in store.spec_errors[0]
    source.loader = real
    path.write_text('[instances.a]\nmodel_id = "o/m"\n[instances.b]\nmodel_id = "o/m"\n')
    assert set((await source.refresh()).instances) == {"a", "b"}  # type: ignore[union-attr]
