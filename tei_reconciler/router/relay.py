"""Relaying one call to one instance: unary, client-streaming and bidirectional streams.

Payloads are raw bytes (no serializers on either side), so the router never decodes what it
does not need to. The client's deadline becomes the backend call's deadline (else
`request_timeout_secs`, for streams too); metadata is forwarded except the keys gRPC owns
and the router's own routing keys (an instance with an API key gets its key as
`authorization`); a backend's status, details and trailing metadata come
back unchanged (see `ending.py`: an answer above max_message_mb is said in the router's
words). Streams are relayed message by message with gRPC's own flow control on both
legs (each write waits for the transport), so a slow reader slows the writer instead of
filling a buffer. A half-close from the client becomes a half-close to the backend; a client
cancel, a router-side error or the end of the handler cancels the backend call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import grpc

from tei_reconciler import metrics
from tei_reconciler.router.ending import StatusWatch, answer_too_large
from tei_reconciler.router.pool import ChannelPool, Connection
from tei_reconciler.router.routes import Balancer, RouteError
from tei_reconciler.routing import Endpoint, RoutingTable
from tei_reconciler.traffic import TrafficSink

Context = Any  # grpc.aio.ServicerContext (untyped)
Metadata = tuple[tuple[str, str | bytes], ...]

INSTANCE_KEY = "x-tei-instance"
MODEL_KEY = "x-tei-model"
_NOT_FORWARDED = frozenset(
    {"content-type", "te", "user-agent", "host", "accept-encoding", INSTANCE_KEY, MODEL_KEY}
)
#: What a write to an instance's call raises once the instance has ended the call (the reader
#: hears why): its status, "already finished" or "half-closed", or the failed batch of gRPC
#: core that `done_writing` lets out bare.
_WRITE_ENDED = (grpc.aio.AioRpcError, grpc.aio.BaseError, asyncio.InvalidStateError)


def split_metadata(context: Context) -> tuple[Metadata, str | None, str | None]:
    """Metadata to forward, plus the values of the two routing keys (None when absent)."""
    forward: list[tuple[str, str | bytes]] = []
    instance = model = None
    for key, value in context.invocation_metadata() or ():
        if key == INSTANCE_KEY:
            instance = value
        elif key == MODEL_KEY:
            model = value
        elif key in _NOT_FORWARDED or key.startswith((":", "grpc-")):
            continue
        else:
            forward.append((key, value))
    return tuple(forward), instance, model


def upstream_metadata(endpoint: Endpoint, metadata: Metadata) -> Metadata:
    """What the instance receives: the client's metadata, and for an instance with an API key
    that key as `authorization` (in place of any the client sent, which was for the router)."""
    if endpoint.api_key is None:
        return metadata
    kept = tuple((key, value) for key, value in metadata if key != "authorization")
    return (*kept, ("authorization", f"Bearer {endpoint.api_key.reveal()}"))


class Relay:
    """Shared state of every handler: the table, the channels, the load and the limits."""

    def __init__(
        self,
        table: RoutingTable,
        pool: ChannelPool,
        *,
        request_timeout_secs: float,
        default_instance: str | None,
        balancer: Balancer | None = None,
        traffic: TrafficSink | None = None,
    ) -> None:
        self.table = table
        self.pool = pool
        self.balancer = balancer or Balancer()
        self.request_timeout_secs = request_timeout_secs
        self.default_instance = default_instance
        self.traffic = traffic  # the dashboard's recent-traffic ring

    def timeout(self, context: Context) -> float | None:
        remaining: float | None = context.time_remaining()
        if remaining is not None:
            return max(remaining, 0.0)
        return self.request_timeout_secs or None

    def begin(self, endpoint: Endpoint) -> Connection:
        conn = self.pool.get(endpoint)
        self.pool.acquire(conn)
        self.balancer.acquire(endpoint)
        metrics.ROUTER_IN_FLIGHT.labels(endpoint.name).inc()
        return conn

    def end(
        self, endpoint: Endpoint, conn: Connection, method: str, code: str, started: float
    ) -> None:
        self.pool.release(conn)
        self.balancer.release(endpoint)
        metrics.ROUTER_IN_FLIGHT.labels(endpoint.name).dec()
        seconds = time.perf_counter() - started
        metrics.ROUTER_REQUESTS.labels(endpoint.name, method, code).inc()
        metrics.ROUTER_LATENCY.labels(method).observe(seconds)
        metrics.ROUTER_INSTANCE_LATENCY.labels(endpoint.name).observe(seconds)
        if self.traffic is not None:
            self.traffic.record(endpoint.name, method, code, seconds)

    async def refuse(self, context: Context, method: str, error: RouteError) -> None:
        """Answer a call the router cannot route (always raises, through `context.abort`)."""
        metrics.ROUTER_REQUESTS.labels("", method, error.code.name).inc()
        await context.abort(error.code, error.message)

    async def unary(
        self,
        context: Context,
        *,
        method: str,
        endpoint: Endpoint,
        path: str,
        payload: bytes,
        metadata: Metadata,
    ) -> bytes:
        started = time.perf_counter()
        conn = self.begin(endpoint)
        code = "CANCELLED"
        try:
            response: bytes = await conn.unary_unary(path)(
                payload,
                timeout=self.timeout(context),
                metadata=upstream_metadata(endpoint, metadata),
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            await self.pass_through(context, endpoint, exc)
            raise  # unreachable: abort raises
        else:
            code = "OK"
            return response
        finally:
            self.end(endpoint, conn, method, code, started)

    async def stream(
        self,
        context: Context,
        *,
        method: str,
        endpoint: Endpoint,
        path: str,
        first: bytes | None,
        rest: AsyncIterator[bytes],
        unwrap: Callable[[bytes], bytes] | None,
        metadata: Metadata,
        client_stream_only: bool = False,
    ) -> bytes | None:
        """Relay a stream; returns the single response of a client-streaming call.

        A pump writes the client's messages to the instance while the handler relays the
        instance's answers back. Neither lets out what ends a call (a message the router
        refuses, the instance's status): it is noted, ends both, and answered once both are
        done, so the client hears that status and never the error of a task group."""
        started = time.perf_counter()
        conn = self.begin(endpoint)
        factory = conn.stream_unary(path) if client_stream_only else conn.stream_stream(path)
        call = factory(
            timeout=self.timeout(context), metadata=upstream_metadata(endpoint, metadata)
        )
        watch = StatusWatch(call)
        code = "CANCELLED"
        refused: RouteError | None = None
        failed: grpc.aio.AioRpcError | None = None
        response: bytes | None = None
        finished = False  # the backend's stream ended with OK; anything else is a cancel

        async def pump(scope: anyio.CancelScope) -> None:
            nonlocal refused
            try:
                if first is not None:
                    await call.write(first)
                async for raw in rest:
                    await call.write(raw if unwrap is None else unwrap(raw))
                await call.done_writing()
            except RouteError as exc:
                refused = exc
                call.cancel()  # wakes the reader, which an anyio cancel alone may not
                scope.cancel()
            except _WRITE_ENDED:
                pass  # the backend already ended the call; the reader reports its status

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, tg.cancel_scope)
                try:
                    if client_stream_only:
                        response = await call
                    else:
                        async for message in call:
                            # A write is never cut in half by a cancel from the pump: the
                            # call must stay usable for the status that follows.
                            with anyio.CancelScope(shield=True):
                                await context.write(message)
                    finished = True
                except grpc.aio.AioRpcError as exc:
                    failed = watch.error(exc)
                except asyncio.CancelledError:
                    # grpc.aio ends the read of a call cancelled here with a CancelledError
                    # of its own, which anyio does not take for its cancellation: without
                    # this, a refused stream would leave the handler as if the client had
                    # cancelled, and the client would never get its status.
                    if refused is None:
                        raise
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # a fault of the router itself: grpc logs it
            code = "UNKNOWN"
            raise _first_error(group) from group
        finally:
            call.cancel()
            if refused is not None:
                code = refused.code.name
            elif failed is not None:
                code = failed.code().name
            elif finished:
                code = "OK"
            self.end(endpoint, conn, method, code, started)
        if refused is not None:
            await context.abort(refused.code, refused.message)
        if failed is not None:
            await self.pass_through(context, endpoint, failed)
        return response

    async def pass_through(
        self, context: Context, endpoint: Endpoint, exc: grpc.aio.AioRpcError
    ) -> None:
        """End the call as the instance ended it: its code, details and trailing metadata,
        or the router's own words for an answer above max_message_mb (always raises, through
        `context.abort`)."""
        too_large = answer_too_large(exc, endpoint.name, self.pool.max_message_bytes)
        if too_large is not None:
            await context.abort(too_large.code, too_large.message)
        trailing = tuple(
            (k, v) for k, v in (exc.trailing_metadata() or ()) if not k.startswith("grpc-")
        )
        await context.abort(exc.code(), exc.details() or "", trailing)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error inside a task group's, so that grpc answers and logs it by its type."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
