"""Readiness under load: one slow health check does not take an instance out of routing."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.drivers.probe import ProbeOutcome, ProbeTarget
from tei_reconciler.planner.status import StoreChange

from .reconciler_fakes import FakeProber, World, running

pytestmark = pytest.mark.anyio
SPEC = InstanceSpec(name="a", model_id="hash/8")


class ScriptedProber(FakeProber):
    """Answers each liveness probe from `script` (True = healthy), then healthy forever."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[bool] = []

    async def check(self, target: ProbeTarget, within: float) -> ProbeOutcome:
        self.calls[target.name] = self.calls.get(target.name, 0) + 1
        ok = self.script.pop(0) if self.script else True
        return ProbeOutcome(ok=ok, latency_ms=0.1, message="ok" if ok else "slow")


async def test_fewer_failed_probes_than_the_threshold_keep_the_instance_routable(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, failure_threshold=3)
    prober = ScriptedProber()
    world.controller.prober = world.controller.actuator.prober = prober
    async with running(world):
        world.set_desired(SPEC)
        await world.until(lambda: (s := world.status("a")) is not None and s.ready)
        seen: list[tuple[int, bool]] = []  # (consecutive failures, Ready) of every update
        with world.store.subscribe() as changes, anyio.fail_after(10):
            prober.script = [False, False, True]  # two failures in a row, then healthy
            while True:
                change = await changes.receive()
                status = change.status if isinstance(change, StoreChange) else None
                if status is None:
                    continue
                seen.append((status.health_check_failures, status.ready))
                if not prober.script and status.health_check_failures == 0:
                    break
        assert all(routable for _, routable in seen)
        assert any(failures > 0 for failures, _ in seen)
        assert len(world.driver.spawns_of("a")) == 1  # no restart below the threshold


async def test_failure_threshold_failed_probes_take_the_instance_out_and_restart_it(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, failure_threshold=2)
    async with running(world):
        world.set_desired(SPEC)
        await world.until(lambda: (s := world.status("a")) is not None and s.ready)
        world.prober.mode["a"] = "fail"
        status = await world.phase("a", "CrashLoopBackOff")
        assert not status.ready
        assert world.table.ready() == []  # out of routing
        assert world.driver.stopped  # the unhealthy process was stopped
        world.prober.mode["a"] = "ok"
        world.clock.advance(10)  # the first crash-loop backoff
        world.controller.mark_dirty()
        await world.until(lambda: len(world.driver.spawns_of("a")) == 2)
