"""Liveness, readiness, metrics and the API's own description.

`/health` answers as long as the process serves requests; `/ready` only once a valid desired
state is loaded, the controller has finished a pass and the data plane serves the gRPC port
(tei-manager's `/health` was always "healthy", so a load balancer could not tell a reconciler
still adopting its children from a working one). Both name the data plane in use. `/metrics`
is rendered on a worker thread: with Envoy, a scrape reads Envoy's statistics too.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api.context import ctx_of
from tei_reconciler.api.errors import ApiError, json_response
from tei_reconciler.api.openapi import openapi_document
from tei_reconciler.api.schemas import HealthResponse, ReadyResponse


async def health(request: Request) -> Response:
    plane = ctx_of(request).data_plane
    return json_response(
        HealthResponse(
            status="healthy",
            timestamp=datetime.now(UTC),
            data_plane=plane.status() if plane is not None else None,
        )
    )


async def ready(request: Request) -> Response:
    ctx = ctx_of(request)
    store = ctx.store
    if store.spec_errors:
        raise ApiError(
            503, "NOT_READY", "the state file is invalid: " + "; ".join(store.spec_errors)
        )
    if not store.first_pass_done:
        raise ApiError(503, "NOT_READY", "the controller has not finished its first pass")
    plane = ctx.data_plane.status() if ctx.data_plane is not None else None
    if plane is not None and not plane.up:
        raise ApiError(
            503,
            "NOT_READY",
            f"the data plane ({plane.kind}) does not serve the gRPC port: {plane.detail}",
        )
    body = ReadyResponse(
        status="ready",
        timestamp=datetime.now(UTC),
        revision=store.observed_revision,
        instances=len(store.all()),
        data_plane=plane,
    )
    return json_response(body)


async def metrics(request: Request) -> Response:
    body = await anyio.to_thread.run_sync(generate_latest, REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())
