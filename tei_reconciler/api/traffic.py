"""`/traffic`: the last minutes of router traffic per instance, for the dashboard's charts.

Read from the in-memory ring the data plane feeds (`tei_reconciler.traffic`), so the charts
need no Prometheus. With `Accept: text/event-stream` the answer is a watch: the current
snapshot at once, then a new one each time a step of the ring ends.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import anyio
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api.context import ctx_of
from tei_reconciler.api.errors import json_response
from tei_reconciler.api.streams import EventStream, known_instance, sse, wants_stream
from tei_reconciler.traffic import TrafficSnapshot, until_next_step

#: Past the step boundary, so the step that just ended is complete when it is read.
SETTLE_SECS = 0.05


def _answer(request: Request, read: Callable[[], TrafficSnapshot]) -> Response | EventStream:
    ctx = ctx_of(request)
    if not wants_stream(request):
        return json_response(read())

    async def snapshots() -> AsyncGenerator[bytes]:
        while True:
            yield sse("traffic", read())
            await anyio.sleep(until_next_step(ctx.traffic) + SETTLE_SECS)

    return EventStream(snapshots, ctx.closing)


async def all_traffic(request: Request) -> Response | EventStream:
    traffic = ctx_of(request).traffic
    return _answer(request, traffic.snapshot)


async def instance_traffic(request: Request) -> Response | EventStream:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    await known_instance(ctx, name)
    return _answer(request, lambda: ctx.traffic.series(name))
