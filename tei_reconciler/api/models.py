"""`/models` routes: tei-manager's model registry paths and fields, over the state file and
the model registry.

`GET /models` lists every model the state file declares, an instance uses, or the cache
holds; `POST /models` declares one (a `[models."<id>"]` table, written like every other edit
of the desired state); `POST /models/{id}/download` asks the registry to fetch it now (202,
or with `?wait=true` the answer once it is on disk, as tei-manager's blocking download gave);
`DELETE /models/{id}` undeclares it, and with `?evict=true` removes its files from the cache,
refused with 409 while an instance uses it. `GET /models/{id}/events` is the model's event
log, or with `Accept: text/event-stream` its status as it changes (download progress
included). Ids contain a slash: send them percent-encoded as one segment (`BAAI%2Fbge-small`),
as tei-manager requires; the plain form works too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler.api import streams
from tei_reconciler.api._http import decode_json, query_bool, query_float
from tei_reconciler.api.context import ApiContext, ModelCommands, ctx_of
from tei_reconciler.api.errors import ApiError, api_error_for, json_response
from tei_reconciler.api.modelviews import WatchedModels, model_ids, shown, shown_in, users_of
from tei_reconciler.api.schemas import DeclareModelRequest, ErrorDetail, ModelOut
from tei_reconciler.api.streams import (
    KEEPALIVE,
    EventStream,
    next_change,
    sse,
    wants_stream,
)
from tei_reconciler.api.views import event_out, model_out
from tei_reconciler.desired.check import accepts
from tei_reconciler.planner.model_status import ModelChange, ModelState
from tei_reconciler.store import Missed

DEFAULT_WAIT_SECS = 3600.0


def _model_id(request: Request) -> str:
    return str(request.path_params["model_id"])


def check_model_id(model_id: str) -> None:
    if model_id.startswith("hash/") or not accepts("model_id", model_id):
        message = "must be a Hugging Face model id ('org/name') or an absolute path"
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"invalid model id {model_id!r}: {message}",
            [ErrorDetail(field="model_id", message=message)],
        )


def _commands(ctx: ApiContext) -> ModelCommands:
    if ctx.models is None:
        raise ApiError(503, "MODELS_UNAVAILABLE", "this server runs no model registry")
    return ctx.models


async def list_models(request: Request) -> Response:
    ctx = ctx_of(request)
    desired = await ctx.effective()
    listed = [shown_in(ctx, desired, m) for m in model_ids(ctx, desired)]
    return json_response([m for m in listed if m is not None])


async def get_model(request: Request) -> Response:
    ctx = ctx_of(request)
    model_id = _model_id(request)
    shown_now = await shown(ctx, model_id)
    if shown_now is None:
        raise ApiError(404, "MODEL_NOT_FOUND", f"model {model_id!r} not found")
    return json_response(shown_now)


async def declare_model(request: Request) -> Response:
    """tei-manager's `POST /models`: 201 when newly declared, 200 when it already was."""
    ctx = ctx_of(request)
    body = await decode_json(request, DeclareModelRequest, ctx.settings.max_body_bytes)
    check_model_id(body.model_id)
    fields = {"revision": body.revision, "keep": body.keep}
    try:
        _, created = await ctx.write(ctx.statefile.declare_model, body.model_id, fields)
    except Exception as exc:
        raise api_error_for(exc, prefix=f"models.{body.model_id}.") from exc
    return json_response(await shown(ctx, body.model_id), status=201 if created else 200)


async def download_model(request: Request) -> Response:
    """Fetch now: 202 with the queued status, or `?wait=true`: 200 once on disk, 500
    `MODEL_DOWNLOAD_FAILED` when the fetch failed, 504 when `timeout` passed first."""
    ctx = ctx_of(request)
    model_id = _model_id(request)
    check_model_id(model_id)
    wait = query_bool(request, "wait")
    seconds = query_float(request, "timeout", default=DEFAULT_WAIT_SECS)
    revision = request.query_params.get("revision") or None
    commands = _commands(ctx)
    if wait:
        return await _fetch_and_wait(ctx, commands, model_id, revision, seconds)
    commands.fetch_now(model_id, revision)
    return json_response(await shown(ctx, model_id), status=202)


async def _fetch_and_wait(
    ctx: ApiContext, commands: ModelCommands, model_id: str, revision: str | None, seconds: float
) -> Response:
    with ctx.store.subscribe() as changes:
        commands.fetch_now(model_id, revision)
        with anyio.move_on_after(seconds):
            status = ctx.store.model(model_id)
            while status is None or status.state in (ModelState.AVAILABLE, ModelState.DOWNLOADING):
                change = await changes.receive()
                if isinstance(change, Missed) or (
                    isinstance(change, ModelChange) and change.model_id == model_id
                ):
                    status = ctx.store.model(model_id)
                    if status is None:
                        raise ApiError(
                            500, "MODEL_DOWNLOAD_FAILED", f"{model_id} was removed meanwhile"
                        )
            if status.state is ModelState.FAILED:
                raise ApiError(
                    500, "MODEL_DOWNLOAD_FAILED", f"{model_id}: {status.reason}: {status.message}"
                )
            return json_response(await shown(ctx, model_id) or model_out(status))
    raise ApiError(
        504, "TIMEOUT", f"{model_id} is still downloading after {seconds:g} s (it goes on)"
    )


async def delete_model(request: Request) -> Response:
    ctx = ctx_of(request)
    model_id = _model_id(request)
    evict = query_bool(request, "evict")
    desired = await ctx.effective()
    declared = model_id in desired.models
    cached = ctx.store.model(model_id) is not None
    if not declared and not cached:
        raise ApiError(404, "MODEL_NOT_FOUND", f"model {model_id!r} not found")
    if evict:
        users = users_of(desired, model_id)
        if users:
            raise ApiError(
                409,
                "MODEL_IN_USE",
                f"{model_id} is used by instance(s) {', '.join(users)}: change or delete them "
                "first",
            )
    if declared:
        try:
            await ctx.write(ctx.statefile.undeclare_model, model_id)
        except Exception as exc:
            raise api_error_for(exc, prefix=f"models.{model_id}.") from exc
    if evict:
        commands = _commands(ctx)
        await commands.evict(model_id)
    return Response(status_code=204)


def _model_sse(model_id: str, body: ModelOut | None) -> bytes:
    return sse("deleted", {"model_id": model_id}) if body is None else sse("model", body)


async def model_events(request: Request) -> Response | EventStream:
    ctx = ctx_of(request)
    model_id = _model_id(request)
    if not wants_stream(request):
        if await shown(ctx, model_id) is None:
            raise ApiError(404, "MODEL_NOT_FOUND", f"model {model_id!r} not found")
        return json_response([event_out(e) for e in ctx.store.model_events(model_id)])

    async def changes() -> AsyncGenerator[bytes]:
        models = WatchedModels(ctx)
        with ctx.store.subscribe() as receive:
            first = models.show(await models.desired(), model_id)
            if first is not None:
                yield sse("model", first)
            quiet_since = anyio.current_time()
            while True:
                recheck = models.ahead
                change = await next_change(receive, streams.wait_secs(recheck=recheck))
                if change is None or isinstance(change, Missed):
                    if recheck or change is not None:  # ahead of the controller, or Missed
                        for changed, body in await models.recheck():
                            if changed == model_id:
                                yield _model_sse(model_id, body)
                                quiet_since = anyio.current_time()
                    if anyio.current_time() - quiet_since >= streams.HEARTBEAT_SECS:
                        yield KEEPALIVE
                        quiet_since = anyio.current_time()
                    continue
                if isinstance(change, ModelChange) and change.model_id == model_id:
                    yield _model_sse(model_id, models.show(await models.desired(), model_id))
                    quiet_since = anyio.current_time()

    return EventStream(changes, ctx.closing)
