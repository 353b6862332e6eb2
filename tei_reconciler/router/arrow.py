"""`EmbedArrow` and `EmbedSparseArrow`: a table of texts in, a table of embeddings out.

Input is an Arrow IPC *stream*; column 0 of **every** record batch holds the texts (Utf8 or
LargeUtf8, any name). Null rows stay null in the output, so row i of the answer always
belongs to row i of the question. The texts are fanned out over up to `MAX_STREAMS`
concurrent `EmbedStream` / `EmbedSparseStream` calls to the instance, in contiguous chunks,
each relayed with gRPC flow control. The dimension is whatever the instance returns, so a
stream without a batch, or a dense request whose rows are all null, is INVALID_ARGUMENT:
there is nothing to ask the instance and no dimension to invent.

Output (tei-manager's schemas, LZ4_FRAME-compressed IPC stream, one batch):
dense `embeddings: FixedSizeList<item: Float32 not null, dim>`, sparse
`sparse_embeddings: List<item: Struct{index: UInt32 not null, value: Float32 not null} not null>`.
The column is declared non-nullable, as in tei-manager, unless the input had null rows.

`normalize` keeps tei-manager's wire semantics: the proto field is a plain bool, so it is
false unless the client sets it, and it is sent to the instance as an explicit value (TEI's
own default, when the field is absent, is true). A backend's status comes back unchanged.
`noop` skips the instance but still requires a routable target; it answers rows of
`NOOP_DIMENSION` zeros (dense) or tei-manager's three fixed pairs (sparse), for measuring
transport cost.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2
from tei_reconciler.router.ending import StatusWatch
from tei_reconciler.router.methods import MULTIPLEXER_SERVICE
from tei_reconciler.router.pool import Connection
from tei_reconciler.router.relay import (
    Context,
    Metadata,
    Relay,
    split_metadata,
    upstream_metadata,
)
from tei_reconciler.router.routes import RouteError, resolve, validate_target

NOOP_DIMENSION = 384  # tei-manager's noop answer; never used when an instance answers
MAX_STREAMS = 4
MIN_CHUNK = 32
THREAD_ROWS = 256  # build larger answers in a worker thread: LZ4 releases the GIL
_IPC_MODULE = "tei_reconciler.router.arrow_ipc"

_INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def fan_out(
    conn: Connection,
    path: str,
    requests: list[bytes],
    deadline_secs: float | None,
    metadata: Metadata,
) -> list[bytes]:
    """Send `requests` over up to MAX_STREAMS streams; responses in request order."""
    size = max(MIN_CHUNK, math.ceil(len(requests) / MAX_STREAMS))
    chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
    answers: list[list[bytes]] = [[] for _ in chunks]
    failure: list[grpc.aio.AioRpcError] = []

    async def feed(chunk: list[bytes]) -> AsyncIterator[bytes]:
        for request in chunk:
            yield request

    calls = [
        conn.stream_stream(path)(feed(chunk), timeout=deadline_secs, metadata=metadata)
        for chunk in chunks
    ]
    watches = [StatusWatch(call) for call in calls]

    async def run(index: int, scope: anyio.CancelScope) -> None:
        try:
            async for response in calls[index]:
                answers[index].append(response)
        except grpc.aio.AioRpcError as exc:
            failure.append(watches[index].error(exc))
            scope.cancel()
            for call in calls:  # the first failure ends the whole request
                call.cancel()

    try:
        async with anyio.create_task_group() as tg:
            for index in range(len(chunks)):
                tg.start_soon(run, index, tg.cancel_scope)
    finally:
        for call in calls:
            call.cancel()
    if failure:
        raise failure[0]
    flat = [response for chunk in answers for response in chunk]
    if len(flat) != len(requests):
        raise RouteError(
            grpc.StatusCode.INTERNAL,
            f"instance answered {len(flat)} of {len(requests)} stream requests",
        )
    return flat


async def _ipc() -> Any:
    """The pyarrow side (`arrow_ipc`), imported off the event loop on first use."""
    module = sys.modules.get(_IPC_MODULE)
    if module is None:
        module = await anyio.to_thread.run_sync(importlib.import_module, _IPC_MODULE)
    return module


def _target_of(request: Any) -> multiplexer_pb2.Target:
    if not request.HasField("target"):
        raise RouteError(_INVALID, "Missing target")
    target: multiplexer_pb2.Target = request.target
    return target


async def _relay_arrow(
    relay: Relay,
    context: Context,
    *,
    label: str,
    request: Any,
    path: str,
    build: Callable[[list[str | None], Connection, Metadata], Any],
    noop: Callable[[list[str | None]], Awaitable[bytes]],
) -> bytes:
    try:
        target = validate_target(_target_of(request))
        texts = (await _ipc()).read_texts(request.arrow_ipc)
        endpoint = resolve(relay.table, relay.balancer, target)
    except RouteError as exc:
        await relay.refuse(context, label, exc)
        raise
    if request.noop:
        return await noop(texts)
    metadata, _, _ = split_metadata(context)
    started = time.perf_counter()
    conn = relay.begin(endpoint)
    code = "CANCELLED"
    try:
        data: bytes = await build(texts, conn, upstream_metadata(endpoint, metadata))
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        await relay.pass_through(context, endpoint, exc)
        raise
    except RouteError as exc:
        code = exc.code.name
        await context.abort(exc.code, exc.message)
        raise
    else:
        code = "OK"
        return data
    finally:
        relay.end(endpoint, conn, label, code, started)


def embed_arrow_handler(relay: Relay) -> grpc.RpcMethodHandler:
    label = f"/{MULTIPLEXER_SERVICE}/EmbedArrow"
    path = "/tei.v1.Embed/EmbedStream"

    async def handler(request: multiplexer_pb2.EmbedArrowRequest, context: Context) -> bytes:
        async def build(texts: list[str | None], conn: Connection, metadata: Metadata) -> bytes:
            requests = [
                tei_pb2.EmbedRequest(
                    inputs=text, truncate=request.truncate, normalize=request.normalize
                ).SerializeToString()
                for text in texts
                if text is not None
            ]
            if not requests:
                raise RouteError(
                    _INVALID, "every row is null: the dimension comes from the instance"
                )
            answers = await fan_out(conn, path, requests, relay.timeout(context), metadata)
            vectors = [tei_pb2.EmbedResponse.FromString(a).embeddings for a in answers]
            dim = len(vectors[0])
            if any(len(v) != dim for v in vectors):
                raise RouteError(grpc.StatusCode.INTERNAL, "instance returned unequal dimensions")
            return _ok(await _off_loop((await _ipc()).dense_table, texts, vectors, dim))

        async def noop(texts: list[str | None]) -> bytes:
            return _ok((await _ipc()).dense_table(texts, None, NOOP_DIMENSION))

        return await _relay_arrow(
            relay, context, label=label, request=request, path=path, build=build, noop=noop
        )

    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=multiplexer_pb2.EmbedArrowRequest.FromString
    )


def embed_sparse_arrow_handler(relay: Relay) -> grpc.RpcMethodHandler:
    label = f"/{MULTIPLEXER_SERVICE}/EmbedSparseArrow"
    path = "/tei.v1.Embed/EmbedSparseStream"

    async def handler(request: multiplexer_pb2.EmbedSparseArrowRequest, context: Context) -> bytes:
        async def build(texts: list[str | None], conn: Connection, metadata: Metadata) -> bytes:
            requests = [
                tei_pb2.EmbedSparseRequest(
                    inputs=text, truncate=request.truncate
                ).SerializeToString()
                for text in texts
                if text is not None
            ]
            rows: list[tuple[list[int], list[float]]] = []
            if requests:
                answers = await fan_out(conn, path, requests, relay.timeout(context), metadata)
                for answer in answers:
                    values = tei_pb2.EmbedSparseResponse.FromString(answer).sparse_embeddings
                    rows.append(([v.index for v in values], [v.value for v in values]))
            return _ok(await _off_loop((await _ipc()).sparse_table, texts, rows), sparse=True)

        async def noop(texts: list[str | None]) -> bytes:
            rows = [
                ([i, i + 100, i + 200], [1.0, 0.5, 0.25])
                for i, t in enumerate(texts)
                if t is not None
            ]
            return _ok((await _ipc()).sparse_table(texts, rows), sparse=True)

        return await _relay_arrow(
            relay, context, label=label, request=request, path=path, build=build, noop=noop
        )

    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=multiplexer_pb2.EmbedSparseArrowRequest.FromString
    )


async def _off_loop(build: Callable[..., bytes], texts: list[str | None], *args: Any) -> bytes:
    """Build an answer table, off the event loop when it is big enough to stall other calls."""
    if len(texts) < THREAD_ROWS:
        return build(texts, *args)
    return await anyio.to_thread.run_sync(build, texts, *args)


def _ok(ipc: bytes, *, sparse: bool = False) -> bytes:
    if sparse:
        return multiplexer_pb2.EmbedSparseArrowResponse(arrow_ipc=ipc).SerializeToString()
    return multiplexer_pb2.EmbedArrowResponse(arrow_ipc=ipc).SerializeToString()
