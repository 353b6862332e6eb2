"""Liveness, readiness, metrics and the API's own description.

`/health` answers as long as the process serves requests; `/ready` only once a valid desired
state is loaded and the controller has finished a pass (tei-manager's `/health` was always
"healthy", so a load balancer could not tell a reconciler still adopting its children from a
working one).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api.context import ctx_of
from tei_reconciler.api.errors import ApiError, json_response
from tei_reconciler.api.openapi import openapi_document
from tei_reconciler.api.schemas import HealthResponse, ReadyResponse


async def health(request: Request) -> Response:
    return json_response(HealthResponse(status="healthy", timestamp=datetime.now(UTC)))


async def ready(request: Request) -> Response:
    store = ctx_of(request).store
    if store.spec_errors:
        raise ApiError(
            503, "NOT_READY", "the state file is invalid: " + "; ".join(store.spec_errors)
        )
    if not store.first_pass_done:
        raise ApiError(503, "NOT_READY", "the controller has not finished its first pass")
    body = ReadyResponse(
        status="ready",
        timestamp=datetime.now(UTC),
        revision=store.observed_revision,
        instances=len(store.all()),
    )
    return json_response(body)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())
