"""`/traffic`: the dashboard's recent-traffic figures, read once or watched step by step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from tei_reconciler.api import create_app
from tei_reconciler.traffic import TrafficRing

from .harness import build
from .test_server import served as on_a_real_server
from .test_server import sse_events
from support.clock import FakeClock

EMBED = "/tei.v1.Embed/Embed"


def app_with(tmp_path: Path, ring: TrafficRing) -> Starlette:
    """The API over a state file holding instance `a`, reading `ring`."""
    _, api = build(tmp_path)
    api.statefile.path.write_text('[instances.a]\nmodel_id = "m/x"\n')
    return create_app(
        statefile=api.statefile,
        store=api.store,
        settings=api.settings,
        on_change=api.controller.on_change,
        preview=api.controller.preview,
        traffic=ring,
    )


@pytest.fixture
async def served(
    tmp_path: Path, fake_clock: FakeClock
) -> AsyncIterator[tuple[httpx.AsyncClient, TrafficRing]]:
    ring = TrafficRing(step_secs=10.0, clock=fake_clock)
    app = app_with(tmp_path, ring)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client, ring


@pytest.mark.anyio
async def test_traffic_lists_each_instance_over_the_last_minute(
    served: tuple[httpx.AsyncClient, TrafficRing], fake_clock: FakeClock
) -> None:
    client, ring = served
    for _ in range(30):
        ring.record("a", EMBED, "OK", 0.004)
    ring.record("a", EMBED, "INTERNAL", 0.004)
    fake_clock.advance(10)
    body = (await client.get("/traffic")).json()
    assert body["span_secs"] == 60
    (a,) = body["instances"]
    assert (a["instance"], a["requests"], a["errors"], a["points"]) == ("a", 31, 1, [])
    assert a["p99_ms"] == pytest.approx(4, rel=0.3)


@pytest.mark.anyio
async def test_an_instances_traffic_has_a_point_per_step_even_without_calls(
    served: tuple[httpx.AsyncClient, TrafficRing],
) -> None:
    client, _ = served
    body = (await client.get("/instances/a/traffic")).json()
    (a,) = body["instances"]
    assert len(a["points"]) == 59
    assert {p["requests"] for p in a["points"]} == {0}
    missing = await client.get("/instances/nobody/traffic")
    assert (missing.status_code, missing.json()["code"]) == (404, "INSTANCE_NOT_FOUND")


@pytest.mark.anyio
async def test_a_traffic_watch_sends_a_new_snapshot_as_each_step_ends(tmp_path: Path) -> None:
    ring = TrafficRing(step_secs=0.2)  # the real clock: steps end while the test watches
    app = app_with(tmp_path, ring)
    headers = {"accept": "text/event-stream"}
    async with on_a_real_server(app) as client:
        with anyio.fail_after(30):
            async with client.stream("GET", "/traffic", headers=headers) as response:
                events = sse_events(response)
                event, first = await anext(events)
                assert (event, first["instances"]) == ("traffic", [])  # type: ignore[index]
                ring.record("a", EMBED, "OK", 0.01)
                async for event, data in events:
                    assert event == "traffic"
                    if data["instances"]:  # type: ignore[index]
                        break
                assert data["instances"][0]["requests"] == 1  # type: ignore[index]
