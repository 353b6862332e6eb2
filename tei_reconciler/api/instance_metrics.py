"""`GET /instances/{name}/metrics`: an instance's own Prometheus text, through the API port.

Instances listen on `instance_host` (127.0.0.1 by default) so that nothing reaches them
around the reconciler's auth; this route lets a Prometheus that can reach the API scrape
each TEI's metrics (request counts, queue and inference latencies) under the same auth.
It only reads: the port comes from the status store, never from the request.
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api.context import ctx_of
from tei_reconciler.api.errors import ApiError
from tei_reconciler.api.streams import known_instance

SCRAPE_TIMEOUT_SECS = 5.0
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]"}


async def instance_metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    await known_instance(ctx, name)
    status = ctx.store.get(name)
    if status is None or status.pid is None or status.prometheus_port is None:
        raise ApiError(503, "INSTANCE_NOT_RUNNING", f"instance {name!r} has no running process")
    host = ctx.settings.instance_host
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal, as URLs spell it
    url = f"http://{host}:{status.prometheus_port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_SECS) as client:
            answer = await client.get(url)
    except httpx.HTTPError as exc:
        raise ApiError(
            502, "INSTANCE_METRICS_UNAVAILABLE", f"instance {name!r} metrics: {exc}"
        ) from exc
    if answer.status_code != 200:
        raise ApiError(
            502,
            "INSTANCE_METRICS_UNAVAILABLE",
            f"instance {name!r} metrics answered HTTP {answer.status_code}",
        )
    media = answer.headers.get("content-type", "text/plain; version=0.0.4; charset=utf-8")
    return Response(answer.content, media_type=media)
