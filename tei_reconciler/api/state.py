"""`/state` and `/plan`: the whole desired state as TOML, with optimistic concurrency.

`GET /state` returns the file byte for byte with its revision as the ETag; `PUT /state` with
`If-Match` replaces it only if nobody changed it since (412 otherwise), the same contract as
`kubectl apply` on a resourceVersion. `?dry_run=true` validates and shows what the controller
would do, writing nothing, so a GitOps pipeline can preview a change through the API.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api._http import media_type, query_bool, read_body
from tei_reconciler.api.context import ctx_of
from tei_reconciler.api.errors import ApiError, api_error_for, json_response, problem_details
from tei_reconciler.api.schemas import PlanResponse, StateWriteResponse
from tei_reconciler.errors import SpecError

TOML_TYPES = frozenset({"application/toml", "text/toml", "text/x-toml", "text/plain"})


def etag(revision: str) -> str:
    return f'"{revision}"'


def if_match(request: Request) -> str | None:
    """The revision an `If-Match` header names; None for absent or `*`."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.split(",", 1)[0].strip().removeprefix("W/")
    return value.strip('"')


async def get_state(request: Request) -> Response:
    ctx = ctx_of(request)
    try:
        data, revision = await anyio.to_thread.run_sync(ctx.statefile.read)
    except Exception as exc:
        raise api_error_for(exc) from exc
    return Response(
        data,
        headers={"ETag": etag(revision)},
        media_type="application/toml",
    )


async def put_state(request: Request) -> Response:
    ctx = ctx_of(request)
    kind = media_type(request)
    if kind not in TOML_TYPES:
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"expected Content-Type application/toml, got {kind or 'none'}",
        )
    dry_run = query_bool(request, "dry_run")
    expected = if_match(request)
    data = await read_body(request, ctx.settings.max_body_bytes)
    if dry_run:
        current = (await ctx.snapshot()).revision
        if expected is not None and expected != current:
            raise ApiError(
                412,
                "REVISION_MISMATCH",
                f"state file revision is {current}, not the expected {expected}",
            )
        try:
            desired = await anyio.to_thread.run_sync(ctx.statefile.parse, data)
        except SpecError as exc:
            raise api_error_for(exc) from exc
        body = StateWriteResponse(
            revision=desired.revision, dry_run=True, written=False, actions=ctx.plan(desired)
        )
        return json_response(body)
    try:
        # What this write produced, not a re-read: another writer may already have saved over
        # it, and an ETag naming their revision would let our next If-Match erase their edit.
        desired = await ctx.write(ctx.statefile.replace, data, expected_revision=expected)
    except Exception as exc:
        raise api_error_for(exc) from exc
    body = StateWriteResponse(
        revision=desired.revision, dry_run=False, written=True, actions=ctx.plan(desired)
    )
    return json_response(body, headers={"ETag": etag(desired.revision)})


async def get_plan(request: Request) -> Response:
    ctx = ctx_of(request)
    snap = await ctx.snapshot()
    if snap.desired is not None:
        desired = snap.desired
        errors = []
    else:
        desired = ctx.last_good()
        errors = problem_details(snap.error.problems) if snap.error else []
    read_only = await anyio.to_thread.run_sync(ctx.statefile.read_only_reason)
    body = PlanResponse(
        revision=desired.revision,
        valid=snap.desired is not None,
        errors=errors,
        actions=ctx.plan(desired),
        read_only=read_only is not None,
        read_only_reason=read_only,
    )
    return json_response(body)
