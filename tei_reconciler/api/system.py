"""Liveness, readiness, metrics and the API's own description.

`/health` answers as long as the process serves requests. `/ready` means "this pod can take
traffic": it listens, the data plane serves the gRPC port, the controller has finished its
first pass and a valid desired state is in force (tei-manager's `/health` was always
"healthy", so a load balancer could not tell a reconciler still adopting its children from a
working one). A state file that turns invalid later changes nothing that serves (the last
good state stays in force), so it is a warning in the body, never a 503: one bad GitOps commit
must not take every pod out of its Service. Both name the data plane in use. `/metrics` is
rendered on a worker thread: with Envoy, a scrape reads Envoy's statistics too.
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
    if not store.first_pass_done:
        raise ApiError(503, "NOT_READY", "the controller has not finished its first pass")
    plane = ctx.data_plane.status() if ctx.data_plane is not None else None
    if plane is not None and not plane.up:
        raise ApiError(
            503,
            "NOT_READY",
            f"the data plane ({plane.kind}) does not serve the gRPC port: {plane.detail}",
        )
    # Counts, not the messages: /ready answers without credentials, and a message may quote a
    # value from the file. GET /plan (behind auth) lists them.
    problems = _count(len(store.spec_errors))
    if not store.observed_revision:
        raise ApiError(
            503,
            "NOT_READY",
            f"no valid state file has been read yet ({problems}; GET /plan lists them)",
        )
    warnings = []
    if store.spec_errors:
        warnings.append(
            f"the state file is invalid ({problems}); the last good state stays in force; "
            "GET /plan lists the problems"
        )
    body = ReadyResponse(
        status="ready",
        timestamp=datetime.now(UTC),
        revision=store.observed_revision,
        instances=len(store.all()),
        spec_valid=not store.spec_errors,
        warnings=warnings,
        data_plane=plane,
    )
    return json_response(body)


def _count(problems: int) -> str:
    return f"{problems} problem{'' if problems == 1 else 's'}"


async def metrics(request: Request) -> Response:
    body = await anyio.to_thread.run_sync(generate_latest, REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())
