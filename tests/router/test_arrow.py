"""EmbedArrow and EmbedSparseArrow: every batch, nulls kept, the backend's dimension and codes."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pyarrow as pa
import pytest

from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.routing import RoutingTable

from .fake_backend import vector
from .harness import endpoint, mux_client, mux_to, mux_to_fake, running_router, to
from support.grpc_status import answered

pytestmark = pytest.mark.anyio


def ipc(*batches: Sequence[str | None], kind: pa.DataType | None = None) -> bytes:
    kind = kind or pa.string()
    schema = pa.schema([pa.field("text", kind)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(pa.record_batch([pa.array(batch, kind)], schema=schema))
    data: bytes = sink.getvalue().to_pybytes()
    return data


def table_of(data: bytes) -> pa.Table:
    reader = pa.ipc.open_stream(data)
    return reader.read_all()


async def embed_arrow(request: mux.EmbedArrowRequest, dim: int = 5) -> pa.Table:
    async with mux_to_fake(dim=dim) as (stub, _):
        reply = await stub.EmbedArrow(request, timeout=30)
    return table_of(reply.arrow_ipc)


async def test_every_batch_is_embedded_with_the_backends_dimension() -> None:
    texts = [f"row {i}" for i in range(300)]  # above THREAD_ROWS: built off the loop
    result = await embed_arrow(
        mux.EmbedArrowRequest(target=to("a"), arrow_ipc=ipc(texts[:100], texts[100:])), dim=7
    )
    column = result.column("embeddings")
    assert column.type == pa.list_(pa.field("item", pa.float32(), nullable=False), 7)
    assert not result.schema.field("embeddings").nullable
    assert column.to_pylist() == [pytest.approx(vector(t, 7)) for t in texts]


async def test_null_rows_stay_null_and_the_others_keep_their_place() -> None:
    texts = ["a", None, "c", None]
    result = await embed_arrow(
        mux.EmbedArrowRequest(target=to("a"), arrow_ipc=ipc(texts, kind=pa.large_string()))
    )
    rows = result.column("embeddings").to_pylist()
    assert rows[1] is None
    assert rows[3] is None
    assert rows[0] == pytest.approx(vector("a", 5))
    assert rows[2] == pytest.approx(vector("c", 5))


async def test_the_answer_is_an_lz4_compressed_ipc_stream() -> None:
    async with mux_to_fake() as (stub, _):
        reply = await stub.EmbedArrow(
            mux.EmbedArrowRequest(target=to("a"), arrow_ipc=ipc(["x" * 200] * 50))
        )
    uncompressed = pa.BufferOutputStream()
    answer = table_of(reply.arrow_ipc)
    with pa.ipc.new_stream(uncompressed, answer.schema) as writer:
        writer.write_table(answer)
    assert len(reply.arrow_ipc) < len(uncompressed.getvalue().to_pybytes())


async def test_sparse_arrow_keeps_rows_nulls_and_pairs() -> None:
    async with mux_to_fake() as (stub, _):
        reply = await stub.EmbedSparseArrow(
            mux.EmbedSparseArrowRequest(target=to("a"), arrow_ipc=ipc(["ab"], [None, "abcd"]))
        )
    result = table_of(reply.arrow_ipc)
    assert result.schema.field("sparse_embeddings").type == pa.list_(
        pa.field(
            "item",
            pa.struct(
                [
                    pa.field("index", pa.uint32(), nullable=False),
                    pa.field("value", pa.float32(), nullable=False),
                ]
            ),
            nullable=False,
        )
    )
    assert result.column("sparse_embeddings").to_pylist() == [
        [{"index": 2, "value": 1.0}, {"index": 3, "value": 0.5}],
        None,
        [{"index": 4, "value": 1.0}, {"index": 5, "value": 0.5}],
    ]


@pytest.mark.parametrize(
    ("arrow_ipc", "details"),
    [
        (b"", "Invalid Arrow IPC"),
        (b"not arrow at all", "Invalid Arrow IPC"),
        (ipc(["x"])[:-20], "Invalid Arrow IPC"),
    ],
)
async def test_bad_ipc_is_invalid_argument(arrow_ipc: bytes, details: str) -> None:
    async with running_router(RoutingTable()) as port, mux_client(port) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.EmbedArrow(mux.EmbedArrowRequest(target=to("a"), arrow_ipc=arrow_ipc))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details().startswith(details)


async def test_a_first_column_that_is_not_text_is_invalid_argument() -> None:
    schema = pa.schema([pa.field("n", pa.int64())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([1, 2])], schema=schema))
    async with running_router(RoutingTable()) as port, mux_client(port) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.EmbedArrow(
                mux.EmbedArrowRequest(target=to("a"), arrow_ipc=sink.getvalue().to_pybytes())
            )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Utf8" in (failed.value.details() or "")


FAILS_IN_CHUNK_TWO = [f"ok {i}" if i != 50 else "fail: x" for i in range(100)]


async def test_a_backend_error_keeps_its_code_inside_arrow_calls() -> None:
    async with mux_to_fake() as (stub, _):
        dense = await answered(
            lambda: stub.EmbedArrow(
                mux.EmbedArrowRequest(target=to("a"), arrow_ipc=ipc(FAILS_IN_CHUNK_TWO))
            )
        )
        sparse = await answered(
            lambda: stub.EmbedSparseArrow(
                mux.EmbedSparseArrowRequest(target=to("a"), arrow_ipc=ipc(["fail: y"]))
            )
        )
    assert isinstance(dense, grpc.aio.AioRpcError)
    assert isinstance(sparse, grpc.aio.AioRpcError)
    assert dense.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sparse.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_arrow_calls_are_routed_and_refused_like_any_other() -> None:
    async with mux_to(endpoint("down", 1, ready=False, phase=Phase.CRASH_LOOP_BACK_OFF)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.EmbedArrow(mux.EmbedArrowRequest(arrow_ipc=ipc(["x"])))
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await stub.EmbedArrow(mux.EmbedArrowRequest(target=to("down"), arrow_ipc=ipc(["x"])))
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_noop_answers_without_the_instance_but_still_needs_a_routable_target() -> None:
    table = RoutingTable()
    table.update([endpoint("a", 1)])  # nothing listens on port 1
    async with running_router(table) as port, mux_client(port) as stub:
        dense = await stub.EmbedArrow(
            mux.EmbedArrowRequest(target=to("a"), arrow_ipc=ipc(["x", None, "z"]), noop=True)
        )
        sparse = await stub.EmbedSparseArrow(
            mux.EmbedSparseArrowRequest(target=to("a"), arrow_ipc=ipc(["x"]), noop=True)
        )
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.EmbedArrow(
                mux.EmbedArrowRequest(target=to("ghost"), arrow_ipc=ipc(["x"]), noop=True)
            )
    rows = table_of(dense.arrow_ipc).column(0).to_pylist()
    assert rows == [[0.0] * 384, None, [0.0] * 384]
    assert table_of(sparse.arrow_ipc).column(0).to_pylist() == [
        [{"index": 0, "value": 1.0}, {"index": 100, "value": 0.5}, {"index": 200, "value": 0.25}]
    ]
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
