"""The Envoy data plane as a supervised child programmed over ADS, with real processes:
Envoy killed, a snapshot Envoy rejects, a kept Envoy adopted by the next reconciler, its
statistics under the router's metric names, and its private files."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import grpc
import msgspec
import psutil
import pytest
from prometheus_client import REGISTRY
from router.fake_backend import fake_backend
from router.harness import endpoint, running_data_plane

from tei_reconciler.dataplane.bootstrap import MUX_METHODS
from tei_reconciler.dataplane.envoy import EnvoyDataPlane
from tei_reconciler.dataplane.supervisor import discover
from tei_reconciler.dataplane.translate import Plan, translate
from tei_reconciler.drivers.process import owner_digest
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.routing import RoutingTable
from tei_reconciler.store import StatusStore

from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def embed(port: int, **keys: str) -> str:
    metadata = tuple((f"x-tei-{k}", v) for k, v in keys.items())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs="x"), metadata=metadata, timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return "OK"


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def reasons(store: StatusStore) -> list[str]:
    return [e.reason for e in store.events("")]


async def test_envoy_killed_is_started_again_on_the_same_port_and_reported(
    envoy: str, tmp_path: Path
) -> None:
    store = StatusStore()
    restarts = sample("tei_reconciler_data_plane_restarts_total")
    async with fake_backend() as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path, store=store) as (
            port,
            plane,
        ):
            assert isinstance(plane, EnvoyDataPlane)
            assert plane.supervisor is not None
            await eventually(lambda: plane.routes_to("a"), what="routing")
            first = plane.supervisor.handle
            assert first is not None
            os.kill(first.pid, signal.SIGKILL)
            await eventually(lambda: "DataPlaneExited" in reasons(store), what="the exit event")

            async def serving_again() -> bool:
                return await embed(port, instance="a") == "OK"

            await eventually(serving_again, what="Envoy to serve again")
            await eventually(lambda: plane.status().up, what="the supervisor to see it ready")
            second = plane.supervisor.handle
            status = plane.status()
    assert second is not None
    assert second.pid != first.pid
    assert status.up
    assert status.restarts == 1
    assert sample("tei_reconciler_data_plane_restarts_total") == restarts + 1
    assert "DataPlaneReady" in reasons(store)


async def test_a_snapshot_envoy_rejects_is_reported_and_the_last_good_one_keeps_serving(
    envoy: str, tmp_path: Path
) -> None:
    store = StatusStore()
    rejected = sample("tei_reconciler_data_plane_config_rejected_total", {"resource": "routes"})
    async with fake_backend() as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path, store=store) as (
            port,
            plane,
        ):
            assert isinstance(plane, EnvoyDataPlane)
            await eventually(lambda: plane.routes_to("a"), what="routing")
            good = plane.control.applied
            assert good is not None
            broken = translate(table.all(), Plan(request_timeout_secs=30))
            route = broken.routes[0].virtual_hosts[0].routes[1]
            route.match.headers[0].string_match.safe_regex.regex = "("  # RE2 refuses it
            bad = plane.control.publish(broken, table.version)
            await eventually(lambda: plane.status().config_rejected == 1, what="the NACK")
            still = await embed(port, instance="a")
            applied = plane.control.applied
            # A later good snapshot is applied again.
            table.update([msgspec.structs.replace(endpoint("a", a_port), generation=5)])
            await eventually(lambda: plane.routes_to("a"), what="the next snapshot")
    assert still == "OK"
    assert applied is not None
    assert applied.version == good.version < bad.version
    assert (
        sample("tei_reconciler_data_plane_config_rejected_total", {"resource": "routes"})
        == rejected + 1
    )
    (event,) = [e for e in store.events("") if e.reason == "DataPlaneConfigRejected"]
    assert event.type == "Warning"
    assert f"routing snapshot {bad.version}" in event.message


async def test_envoys_reason_for_a_rejection_never_shows_an_instances_key(
    envoy: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A resource that fails Envoy's validation comes back quoted whole in protobuf's text
    format, the key in every route to its instance and in the multiplexer's context, escaped
    where it holds bytes the format escapes; the event and the log show it masked."""
    key = 'k3y-\x01-\u00e9-"-9f1c'
    store = StatusStore()
    async with fake_backend() as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("a", a_port, api_key=key)])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path, store=store) as (
            _,
            plane,
        ):
            assert isinstance(plane, EnvoyDataPlane)
            await eventually(lambda: plane.routes_to("a"), what="routing")
            broken = translate(table.all(), Plan(request_timeout_secs=30, multiplexer=MUX_METHODS))
            route = broken.routes[0].virtual_hosts[0].routes[0]
            route.request_headers_to_add[0].header.key = ""  # a header needs a name
            plane.control.publish(broken, table.version)
            await eventually(lambda: plane.status().config_rejected == 1, what="the NACK")
            assert plane.supervisor is not None
            envoy_log = plane.supervisor.log_path.read_text(errors="replace")
    (event,) = [e for e in store.events("") if e.reason == "DataPlaneConfigRejected"]
    assert event.message.count("Bearer ***") >= 2  # Envoy quoted the routes that carry it
    assert "k3y" not in event.message
    assert "k3y" not in caplog.text
    assert "Envoy rejected routes version" in caplog.text
    assert "k3y" not in envoy_log  # nor Envoy's own log
    assert "starting main dispatch loop" in envoy_log


@pytest.fixture
def no_envoy_left(tmp_path: Path) -> Iterator[None]:
    """Whatever Envoy a test kept running is stopped afterwards, even when the test fails."""
    yield
    for pid, _ in discover(owner_digest(tmp_path / "state.toml")):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


async def test_a_kept_envoy_serves_on_and_the_next_reconciler_adopts_and_programs_it(
    envoy: str, tmp_path: Path, no_envoy_left: None
) -> None:
    store = StatusStore()
    async with fake_backend(dim=3) as (a_port, _), fake_backend(dim=5) as (b_port, _):
        table = RoutingTable()
        table.update([endpoint("a", a_port)])
        async with running_data_plane(
            table, data_plane="envoy", runtime=tmp_path, on_shutdown="keep"
        ) as (port, plane):
            assert isinstance(plane, EnvoyDataPlane)
            await eventually(lambda: plane.routes_to("a"), what="routing")
            assert plane.supervisor is not None
            assert plane.supervisor.handle is not None
            kept = plane.supervisor.handle.pid
        owner = owner_digest(tmp_path / "state.toml")
        assert [pid for pid, _ in discover(owner)] == [kept]
        served_alone = await embed(port, instance="a")  # no reconciler: the last routes
        table.update([endpoint("b", b_port)])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path, store=store) as (
            again,
            plane,
        ):
            assert isinstance(plane, EnvoyDataPlane)
            await eventually(lambda: plane.routes_to("b"), what="the new routes")
            adopted = (
                plane.supervisor.handle.pid if plane.supervisor and plane.supervisor.handle else 0
            )
            reprogrammed = await embed(again, instance="b")
            gone = await embed(again, instance="a")
        await eventually(lambda: not psutil.pid_exists(kept) or _zombie(kept), what="the stop")
    assert served_alone == "OK"
    assert (again, adopted) == (port, kept)
    assert "DataPlaneAdopted" in reasons(store)
    assert reprogrammed == "OK"
    assert gone == "NOT_FOUND"


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


async def test_calls_through_envoy_show_in_the_router_metrics(envoy: str, tmp_path: Path) -> None:
    labels = {"instance": "metered-e", "method": "/tei.v1.Embed/Embed", "code": "OK"}
    by_model = {"instance": "model:m/e", "method": "/tei.v1.Embed/Embed", "code": "OK"}
    latency = {"method": "/tei.v1.Embed/Embed"}
    before = sample("tei_reconciler_router_requests_total", labels)
    async with fake_backend(model_id="m/e") as (a_port, _):
        table = RoutingTable()
        table.update([endpoint("metered-e", a_port, model_id="m/e")])
        async with running_data_plane(table, data_plane="envoy", runtime=tmp_path) as (port, plane):
            await eventually(lambda: plane.routes_to("metered-e"), what="routing")
            assert await embed(port, instance="metered-e") == "OK"
            assert await embed(port, model="m/e") == "OK"
            await eventually(
                lambda: sample("tei_reconciler_router_requests_total", labels) == before + 1,
                what="Envoy's count",
            )
            model_count = sample("tei_reconciler_router_requests_total", by_model)
            await eventually(  # Envoy publishes histograms on its stats flush (every second)
                lambda: sample("tei_reconciler_router_request_duration_seconds_count", latency),
                what="Envoy's latency histogram",
            )
            in_flight = sample(
                "tei_reconciler_router_in_flight_requests", {"instance": "metered-e"}
            )
        after = sample("tei_reconciler_router_requests_total", labels)
    assert model_count >= 1
    assert in_flight == 0
    assert after == before  # a stopped Envoy reports nothing; its counts went with it


async def test_envoys_files_are_private_to_the_reconcilers_user(envoy: str, tmp_path: Path) -> None:
    async with running_data_plane(RoutingTable(), data_plane="envoy", runtime=tmp_path) as (
        _,
        plane,
    ):
        assert isinstance(plane, EnvoyDataPlane)
        files = plane.files
        log = tmp_path / "runtime" / "logs" / "dataplane.envoy.log"
        modes = {
            "directory": stat.S_IMODE(os.stat(files.directory).st_mode),
            "bootstrap": stat.S_IMODE(os.stat(files.bootstrap).st_mode),
        }
        sockets = [Path(p) for p in (files.admin_socket, files.xds_socket, files.router_socket)]
        assert all(stat.S_ISSOCK(p.stat().st_mode) for p in sockets)
        assert log.stat().st_size > 0
    assert modes == {"directory": 0o700, "bootstrap": 0o600}
    await anyio.lowlevel.checkpoint()
