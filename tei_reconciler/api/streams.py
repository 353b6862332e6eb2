"""Logs and events, read once or watched live over Server-Sent Events.

A watch is an `EventStream`: one task pumps the source, another ends the response when the
client disconnects or the server starts shutting down, so a forgotten `curl -N` never holds a
graceful shutdown for its whole grace period. Status changes come from the store's bounded
subscription: a slow client misses intermediate states, never the latest one (after the store
says it `Missed` changes, the watch sends the current state again), and never slows the
controller.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tei_reconciler.api._http import query_bool, query_int
from tei_reconciler.api.context import ApiContext, ctx_of
from tei_reconciler.api.errors import ApiError, json_response
from tei_reconciler.api.logs import count_lines, follow, normalise, read_slice
from tei_reconciler.api.modelviews import WatchedModels
from tei_reconciler.api.views import event_out, instance_out
from tei_reconciler.desired.spec import is_instance_name
from tei_reconciler.paths import RuntimeDir
from tei_reconciler.planner.model_status import ModelChange
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.store import Change, Missed

HEARTBEAT_SECS = 15.0
RECHECK_SECS = 0.25  # how soon a watch ahead of the controller reads the state file again


KEEPALIVE = b": keepalive\n\n"  # an SSE comment: keeps proxies from closing a quiet stream


def wait_secs(*, recheck: bool) -> float:
    """How long a watch waits for a change before it looks again or sends a `KEEPALIVE`."""
    return min(RECHECK_SECS, HEARTBEAT_SECS) if recheck else HEARTBEAT_SECS


def sse(event: str, data: object, id_: int | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + msgspec.json.encode(data) + b"\n\n"


async def next_change(
    receive: MemoryObjectReceiveStream[Change], within: float | None = None
) -> Change | None:
    """The store's next change, or None once `within` seconds passed without one (by
    default, time to send a `KEEPALIVE`)."""
    with anyio.move_on_after(HEARTBEAT_SECS if within is None else within):
        return await receive.receive()
    return None


class EventStream:
    """An ASGI `text/event-stream` response fed by an async iterator of encoded events."""

    def __init__(self, source: Callable[[], AsyncGenerator[bytes]], closing: anyio.Event | None):
        self.source = source
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        async with anyio.create_task_group() as tg:

            async def pump() -> None:
                async with aclosing(self.source()) as chunks:
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tg.cancel_scope.cancel()

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            async def until_closing() -> None:
                if self.closing is not None:
                    await self.closing.wait()
                    tg.cancel_scope.cancel()

            tg.start_soon(pump)
            tg.start_soon(until_disconnect)
            tg.start_soon(until_closing)
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away first
            return


def wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def known_instance(ctx: ApiContext, name: str) -> None:
    """404 unless `name` is in the state file or the status store."""
    spec, status = await ctx.lookup(name)
    if (spec is None and status is None) or not is_instance_name(name):
        raise ApiError(404, "INSTANCE_NOT_FOUND", f"instance {name!r} not found")


async def get_logs(request: Request) -> Response | EventStream:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    await known_instance(ctx, name)
    start, end = query_int(request, "start"), query_int(request, "end")
    path = RuntimeDir(Path(ctx.settings.runtime_dir)).log(name)
    if not query_bool(request, "follow"):
        return json_response(await anyio.to_thread.run_sync(read_slice, path, start, end))

    def total() -> int:
        try:
            with path.open("rb") as f:
                return count_lines(f)
        except FileNotFoundError:
            return 0

    first, _ = normalise(await anyio.to_thread.run_sync(total), start, None)

    async def lines() -> AsyncGenerator[bytes]:
        async for index, line in follow(path, first):
            yield sse("log", {"index": index, "line": line}, index)

    return EventStream(lines, ctx.closing)


def _watch(ctx: ApiContext, name: str | None) -> Callable[[], AsyncGenerator[bytes]]:
    """`/events` (or one instance's, `name`): the current state, then each change as it
    happens; the current state again after the store says the watch missed changes."""

    async def changes() -> AsyncGenerator[bytes]:
        models = WatchedModels(ctx)
        shown: set[str] = set()  # the instances this watch has shown and not deleted since

        def status_sse(status: InstanceStatus) -> bytes:
            shown.add(status.name)
            out = instance_out(status.spec, status, ctx.clock.wall(), ctx.routed_by(status.name))
            return sse("status", out)

        def deleted_sse(gone: str) -> bytes:
            shown.discard(gone)
            return sse("deleted", {"name": gone})

        async def everything() -> AsyncIterator[bytes]:
            current = [s for s in ctx.store.all() if name is None or s.name == name]
            for gone in sorted(shown - {s.name for s in current}):
                yield deleted_sse(gone)
            for status in current:
                yield status_sse(status)
            if name is None:
                for model_id, body in await models.recheck():
                    yield _model_sse(model_id, body)

        with ctx.store.subscribe() as receive:
            async for chunk in everything():
                yield chunk
            quiet_since = anyio.current_time()
            while True:
                recheck = name is None and models.ahead
                change = await next_change(receive, wait_secs(recheck=recheck))
                if change is None:
                    if recheck:
                        for model_id, body in await models.recheck():
                            yield _model_sse(model_id, body)
                            quiet_since = anyio.current_time()
                    if anyio.current_time() - quiet_since >= HEARTBEAT_SECS:
                        yield KEEPALIVE
                        quiet_since = anyio.current_time()
                    continue
                if isinstance(change, Missed):
                    async for chunk in everything():
                        yield chunk
                elif isinstance(change, ModelChange):
                    if name is not None:
                        continue
                    body = models.show(await models.desired(), change.model_id)
                    yield _model_sse(change.model_id, body)
                elif name is not None and change.name != name:
                    continue
                elif change.status is None:
                    yield deleted_sse(change.name)
                else:
                    yield status_sse(change.status)
                quiet_since = anyio.current_time()

    return changes


def _model_sse(model_id: str, body: object) -> bytes:
    if body is None:
        return sse("model_deleted", {"model_id": model_id})
    return sse("model", body)


async def list_events(request: Request) -> Response | EventStream:
    ctx = ctx_of(request)
    if wants_stream(request):
        return EventStream(_watch(ctx, None), ctx.closing)
    return json_response([event_out(e) for e in ctx.store.events()])


async def instance_events(request: Request) -> Response | EventStream:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    await known_instance(ctx, name)
    if wants_stream(request):
        return EventStream(_watch(ctx, name), ctx.closing)
    return json_response([event_out(e) for e in ctx.store.events(name)])
