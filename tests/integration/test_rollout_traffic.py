"""Zero-downtime changes, measured by the traffic users send through the router while they
happen, on both data planes: a spec change, a restart and a failed rollout lose no call; a
stop or a delete fails only calls sent after the instance left routing (its calls in flight
finish first); a stream open across a rollout finishes on the old process.

Every call is slow (`slow_ms`), so each change meets calls in flight that must be drained.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc
import psutil
import pytest

from tei_reconciler.desired.spec import spec_hash
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.routing import RoutingTable

from .reconciler_harness import Harness, fast_settings, instance_toml, reconciler, write_atomic
from support.traffic import Load, traffic
from support.waiting import eventually

pytestmark = pytest.mark.anyio

SLOW_MS = 400  # every call stays in flight this long
#: A call sent less than this before the instance left routing may reach the data plane after
#: it (the client's clock starts before the call crosses the loopback); one sent earlier was
#: in flight at the change and must finish.
IN_FLIGHT_SKEW = 0.1


def spec(*, faults: str = "", **fields: object) -> str:
    engine_faults = ",".join(f for f in (f"slow_ms={SLOW_MS}", faults) if f)
    env = {"TEI_ENGINE_FAULTS": engine_faults}
    return instance_toml("a", model_id="hash/384", gpu="none", env=env, **fields)


@asynccontextmanager
async def serving(tmp_path: Path, data_plane: str) -> AsyncIterator[tuple[Harness, InstanceStatus]]:
    """Instance `a` Ready behind the data plane, and its status then."""
    settings = fast_settings(tmp_path, data_plane=data_plane, stop_grace_secs=10.0)
    async with reconciler(settings, spec(), with_front_ends=True) as h:
        yield h, await h.ready("a")


async def rolled_out(h: Harness, old: InstanceStatus) -> InstanceStatus:
    """The status once a new process serves the desired spec alone."""

    def done() -> InstanceStatus | None:
        s = h.status("a")
        alone = s is not None and [p.role for p in s.processes] == ["current"]
        new = s is not None and s.pid != old.pid and s.spec_hash == spec_hash(s.spec)
        return s if s is not None and s.ready and alone and new else None

    status: InstanceStatus = await eventually(done, what="the rollout to finish")
    return status


def gone(pid: int | None) -> bool:
    try:
        return psutil.Process(pid or 0).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reasons(h: Harness) -> list[str]:
    return [e.reason for e in h.store.events("a")]


async def left_routing(table: RoutingTable, name: str, when: list[float]) -> None:
    """Append the moment `name` stops being routable in `table`."""
    seen = table.version
    while (endpoint := table.get(name)) is not None and endpoint.ready:
        await table.wait_changed(seen)
        seen = table.version
    when.append(time.monotonic())


def only_later_calls_failed(load: Load, left: float, codes: set[str]) -> None:
    """Calls sent while the instance was routable all succeeded, those in flight at the change
    included; the ones that failed were sent after it and failed with `codes`."""
    early = [c for c in load.calls if c.began < left - IN_FLIGHT_SKEW]
    assert early, "no call was sent before the change"
    assert {c.code for c in early} == {"OK"}
    drained = [c for c in load.calls if c.began < left < c.ended and c.code == "OK"]
    assert drained, "no call in flight when the instance left routing was answered"
    failed = load.failed()
    assert failed, "no call was refused after the instance left routing"
    assert {c.code for c in failed} <= codes


async def test_a_spec_change_under_load_loses_no_call(tmp_path: Path, data_plane: str) -> None:
    async with (
        serving(tmp_path, data_plane) as (h, first),
        traffic(h.grpc_target, instance="a") as load,
    ):
        await load.more(12)
        write_atomic(h.state_file, spec(max_batch_tokens=8192))
        second = await rolled_out(h, first)
        await load.more(12, what="calls to the new process")
    assert load.failed() == []
    assert second.port != first.port
    assert gone(first.pid)
    steps = ["NewProcessStarted", "NewProcessReady", "Switched", "OldProcessDrained"]
    assert [r for r in reasons(h) if r in steps] == steps


async def test_a_restart_under_load_loses_no_call(tmp_path: Path, data_plane: str) -> None:
    async with (
        serving(tmp_path, data_plane) as (h, first),
        traffic(h.grpc_target, instance="a") as load,
    ):
        await load.more(12)
        async with h.api() as api:
            response = await api.post("/instances/a/restart")
        assert response.status_code == 200, response.text
        second = await rolled_out(h, first)
        await load.more(12, what="calls to the new process")
    assert load.failed() == []
    assert second.spec.restarted_at is not None
    assert gone(first.pid)


async def test_a_rollout_whose_new_process_crashes_at_start_loses_no_call(
    tmp_path: Path, data_plane: str
) -> None:
    async with (
        serving(tmp_path, data_plane) as (h, first),
        traffic(h.grpc_target, instance="a") as load,
    ):
        await load.more(12)
        write_atomic(h.state_file, spec(faults="start_error=CUDA out of memory"))

        def failed_twice() -> InstanceStatus | None:
            """The status between the second failure and the next attempt."""
            s = h.status("a")
            failure = s.rollout_failure if s is not None else None
            if s is None or failure is None or failure.attempts < 2:
                return None
            progressing = next(c for c in s.conditions if c.type == "Progressing")
            return s if progressing.status == "False" else None

        status = await eventually(failed_twice, what="the rollout to fail, and fail again")
        await load.more(12, what="calls to the old process")
        assert not gone(first.pid)
    assert load.failed() == []
    assert status.pid == first.pid
    assert status.ready
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "RolloutFailed")
    assert "CUDA out of memory" in progressing.message


@pytest.mark.parametrize("how", ["stop", "delete"])
async def test_a_stop_or_delete_under_load_fails_only_calls_sent_after_it_left_routing(
    tmp_path: Path, data_plane: str, how: str
) -> None:
    left: list[float] = []
    async with (
        serving(tmp_path, data_plane) as (h, first),
        traffic(h.grpc_target, instance="a") as load,
        anyio.create_task_group() as tg,
    ):
        await load.more(12)
        tg.start_soon(left_routing, h.table, "a", left)
        async with h.api() as api:
            await load.sent_next()  # a call has just begun: it is in flight at the change
            if how == "stop":
                response = await api.post("/instances/a/stop")
            else:
                response = await api.delete("/instances/a")
        assert response.is_success, response.text
        await eventually(lambda: gone(first.pid), what="the process to stop")
        await eventually(lambda: len(load.failed()) >= 4, what="calls refused afterwards")
    codes = {"UNAVAILABLE"} if how == "stop" else {"UNAVAILABLE", "NOT_FOUND"}
    only_later_calls_failed(load, left[0], codes)
    drained = (
        [e.message for e in h.store.events("a") if e.reason == "Drained"] if how == "stop" else []
    )
    assert how == "delete" or "its calls in flight finished" in drained[-1]


async def test_a_stream_open_across_a_rollout_finishes_on_the_old_process(
    tmp_path: Path, data_plane: str
) -> None:
    async with serving(tmp_path, data_plane) as (h, first):
        async with grpc.aio.insecure_channel(h.grpc_target) as channel:
            stream = tei_pb2_grpc.EmbedStub(channel).EmbedStream(
                metadata=(("x-tei-instance", "a"),), timeout=60
            )
            await stream.write(tei_pb2.EmbedRequest(inputs="before the change"))
            assert (await stream.read()).embeddings
            write_atomic(h.state_file, spec(max_batch_tokens=8192))
            await eventually(
                lambda: (s := h.status("a")) is not None and s.pid != first.pid,
                what="traffic to switch to the new process",
            )
            for i in range(3):
                await stream.write(tei_pb2.EmbedRequest(inputs=f"after the switch {i}"))
                assert (await stream.read()).embeddings
                assert not gone(first.pid)  # the old process serves the stream to its end
            await stream.done_writing()
            assert await stream.code() == grpc.StatusCode.OK
        await eventually(lambda: gone(first.pid), what="the old process to stop")
    drained = [e.message for e in h.store.events("a") if e.reason == "OldProcessDrained"]
    assert drained
    assert "its calls in flight finished" in drained[-1]
