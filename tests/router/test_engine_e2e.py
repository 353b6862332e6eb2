"""Every RPC through the router against real engine processes equals calling the engine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anyio
import grpc
import pyarrow as pa
import pytest

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc
from tei_reconciler.routing import RoutingTable

from .harness import endpoint, running_router, to
from support.engines import engines
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio

MODELS = {
    "emb": "hash/384",
    "splade": "hash/splade",
    "rerank": "hash/reranker",
    "cls": "hash/classifier",
}

# (RPC, instance, tei.v1 stub, tei.v1 requests, multiplexer wrapper, streaming?)
EMBED = [tei_pb2.EmbedRequest(inputs=t) for t in ("hello", "a longer sentence", "x")]
SPARSE = [tei_pb2.EmbedSparseRequest(inputs=t) for t in ("hello", "sparse world")]
ALL = [tei_pb2.EmbedAllRequest(inputs=t) for t in ("hello", "tokens please")]
PREDICT = [tei_pb2.PredictRequest(inputs=t) for t in ("good", "bad")]
PAIR = [
    tei_pb2.PredictPairRequest(inputs=["a", "b"]),
    tei_pb2.PredictPairRequest(inputs=["c", "d"]),
]
RERANK = tei_pb2.RerankRequest(query="q", texts=["one", "two", "three"], return_text=True)
RERANK_STREAM = [tei_pb2.RerankStreamRequest(query="q", text=t) for t in ("one", "two")]
ENCODE = [tei_pb2.EncodeRequest(inputs=t, add_special_tokens=True) for t in ("hello", "tokens")]
DECODE = [tei_pb2.DecodeRequest(ids=[101, 7592, 102]), tei_pb2.DecodeRequest(ids=[1, 2])]

CASES: list[tuple[str, str, Any, list[Any], Any, str]] = [
    ("Info", "emb", tei_pb2_grpc.InfoStub, [tei_pb2.InfoRequest()], mux.InfoRequest, "unary"),
    ("Embed", "emb", tei_pb2_grpc.EmbedStub, EMBED[:1], mux.EmbedRequest, "unary"),
    ("EmbedStream", "emb", tei_pb2_grpc.EmbedStub, EMBED, mux.EmbedRequest, "bidi"),
    ("EmbedSparse", "splade", tei_pb2_grpc.EmbedStub, SPARSE[:1], mux.EmbedSparseRequest, "unary"),
    ("EmbedSparseStream", "splade", tei_pb2_grpc.EmbedStub, SPARSE, mux.EmbedSparseRequest, "bidi"),
    ("EmbedAll", "emb", tei_pb2_grpc.EmbedStub, ALL[:1], mux.EmbedAllRequest, "unary"),
    ("EmbedAllStream", "emb", tei_pb2_grpc.EmbedStub, ALL, mux.EmbedAllRequest, "bidi"),
    ("Predict", "cls", tei_pb2_grpc.PredictStub, PREDICT[:1], mux.PredictRequest, "unary"),
    ("PredictPair", "cls", tei_pb2_grpc.PredictStub, PAIR[:1], mux.PredictPairRequest, "unary"),
    ("PredictStream", "cls", tei_pb2_grpc.PredictStub, PREDICT, mux.PredictRequest, "bidi"),
    ("PredictPairStream", "cls", tei_pb2_grpc.PredictStub, PAIR, mux.PredictPairRequest, "bidi"),
    ("Rerank", "rerank", tei_pb2_grpc.RerankStub, [RERANK], mux.RerankRequest, "unary"),
    (
        "RerankStream",
        "rerank",
        tei_pb2_grpc.RerankStub,
        RERANK_STREAM,
        mux.RerankStreamRequest,
        "client",
    ),
    ("Tokenize", "emb", tei_pb2_grpc.TokenizeStub, ENCODE[:1], mux.EncodeRequest, "unary"),
    ("TokenizeStream", "emb", tei_pb2_grpc.TokenizeStub, ENCODE, mux.EncodeRequest, "bidi"),
    ("Decode", "emb", tei_pb2_grpc.TokenizeStub, DECODE[:1], mux.DecodeRequest, "unary"),
    ("DecodeStream", "emb", tei_pb2_grpc.TokenizeStub, DECODE, mux.DecodeRequest, "bidi"),
]


@pytest.fixture(scope="module")
def engine_ports() -> Iterator[dict[str, int]]:
    with engines(MODELS) as started:
        yield {name: engine.port for name, engine in started.items()}


def routing_table(ports: dict[str, int]) -> RoutingTable:
    table = RoutingTable()
    table.update([endpoint(n, p, model_id=MODELS[n]) for n, p in ports.items()])
    return table


def comparable(message: Any) -> Any:
    """The message without timings, which differ from call to call."""
    copy = type(message)()
    copy.CopyFrom(message)
    if copy.DESCRIPTOR.fields_by_name.get("metadata") and copy.HasField("metadata"):
        for field in (
            "total_time_ns",
            "tokenization_time_ns",
            "queue_time_ns",
            "inference_time_ns",
        ):
            copy.metadata.ClearField(field)
    return copy


async def call(stub_method: Any, requests: list[Any], kind: str, **kwargs: Any) -> list[Any]:
    if kind == "unary":
        return [await stub_method(requests[0], timeout=DEADLINE, **kwargs)]

    async def feed() -> AsyncIterator[Any]:
        for request in requests:
            yield request

    if kind == "client":
        return [await stub_method(feed(), timeout=DEADLINE, **kwargs)]
    return [r async for r in stub_method(feed(), timeout=DEADLINE, **kwargs)]


def wrap(wrapper: Any, requests: list[Any], target: mux.Target) -> list[Any]:
    if wrapper is mux.InfoRequest:
        return [mux.InfoRequest(target=target)]
    return [wrapper(target=target if i == 0 else None, request=r) for i, r in enumerate(requests)]


@pytest.mark.parametrize(("rpc", "instance", "stub", "requests", "wrapper", "kind"), CASES)
async def test_every_multiplexer_and_plain_rpc_answers_exactly_like_the_engine(
    engine_ports: dict[str, int],
    rpc: str,
    instance: str,
    stub: Any,
    requests: list[Any],
    wrapper: Any,
    kind: str,
) -> None:
    table = routing_table(engine_ports)
    async with (
        running_router(table) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{engine_ports[instance]}") as direct_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as router_channel,
    ):
        direct = await call(getattr(stub(direct_channel), rpc), requests, kind)
        muxed = await call(
            getattr(multiplexer_pb2_grpc.TeiMultiplexerStub(router_channel), rpc),
            wrap(wrapper, requests, to(instance)),
            kind,
        )
        plain = await call(
            getattr(stub(router_channel), rpc),
            requests,
            kind,
            metadata=(("x-tei-instance", instance),),
        )
    assert direct
    assert [comparable(m) for m in muxed] == [comparable(d) for d in direct]
    assert [comparable(p) for p in plain] == [comparable(d) for d in direct]


def ipc(texts: Sequence[str | None], batch: int) -> bytes:
    schema = pa.schema([pa.field("text", pa.string())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for i in range(0, len(texts), batch):
            writer.write_batch(pa.record_batch([pa.array(texts[i : i + batch])], schema=schema))
    data: bytes = sink.getvalue().to_pybytes()
    return data


async def test_embed_arrow_equals_the_engines_own_stream_row_by_row(
    engine_ports: dict[str, int],
) -> None:
    texts: list[str | None] = [f"text number {i}" for i in range(120)]
    texts[7] = None
    table = routing_table(engine_ports)
    async with (
        running_router(table) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{engine_ports['emb']}") as direct_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as router_channel,
    ):
        requests = [tei_pb2.EmbedRequest(inputs=t, normalize=True) for t in texts if t]
        direct = await call(tei_pb2_grpc.EmbedStub(direct_channel).EmbedStream, requests, "bidi")
        reply = await multiplexer_pb2_grpc.TeiMultiplexerStub(router_channel).EmbedArrow(
            mux.EmbedArrowRequest(target=to("emb"), arrow_ipc=ipc(texts, 50), normalize=True),
            timeout=DEADLINE,
        )
    rows = pa.ipc.open_stream(reply.arrow_ipc).read_all().column(0).to_pylist()
    assert rows[7] is None
    expected = iter(direct)
    for row, text in zip(rows, texts, strict=True):
        if text is not None:
            assert row == pytest.approx(list(next(expected).embeddings))


async def test_embed_sparse_arrow_equals_the_engines_own_stream(
    engine_ports: dict[str, int],
) -> None:
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    table = routing_table(engine_ports)
    async with (
        running_router(table) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{engine_ports['splade']}") as direct_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as router_channel,
    ):
        requests = [tei_pb2.EmbedSparseRequest(inputs=t) for t in texts]
        direct = await call(
            tei_pb2_grpc.EmbedStub(direct_channel).EmbedSparseStream, requests, "bidi"
        )
        reply = await multiplexer_pb2_grpc.TeiMultiplexerStub(router_channel).EmbedSparseArrow(
            mux.EmbedSparseArrowRequest(target=to("splade"), arrow_ipc=ipc(texts, 2)),
            timeout=DEADLINE,
        )
    rows = pa.ipc.open_stream(reply.arrow_ipc).read_all().column(0).to_pylist()
    assert [[(v["index"], pytest.approx(v["value"])) for v in row] for row in rows] == [
        [(v.index, pytest.approx(v.value)) for v in d.sparse_embeddings] for d in direct
    ]


TEI_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from tei_client import GrpcClient
    client = GrpcClient(sys.argv[1])
    info = client.info()
    out = {
        "model_id": info.server_model_id,
        "embed": [list(v) for v in client.embed(["hello", "world"])],
        "tokens": [[t.id for t in r.tokens] for r in client.tokenize(["hello world"])],
    }
    print(json.dumps(out))
    """
)


async def tei_client(address: str) -> dict[str, Any]:
    """What the script printed; a failure (or a hang) says how it ended and its stderr."""
    argv = [sys.executable, "-c", TEI_CLIENT_SCRIPT, address]
    try:
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(argv, capture_output=True, timeout=DEADLINE, check=False)
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the tei_client script hung: {said(hung.stderr)}") from None
    ended = f"exit status {done.returncode}; {said(done.stderr)}"
    assert done.returncode == 0, f"the tei_client script failed: {ended}"
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"the tei_client script printed {done.stdout!r}: {ended}") from None
    return result


def said(stderr: bytes | None) -> str:
    return "stderr:\n" + (stderr or b"").decode(errors="replace")


async def test_the_tei_client_library_works_through_the_router_unchanged(
    engine_ports: dict[str, int],
) -> None:
    if importlib.util.find_spec("tei_client") is None:  # not imported here: its stubs clash
        pytest.skip("tei-client is not installed")
    table = RoutingTable(default_instance="emb")
    table.update([endpoint(n, p, model_id=MODELS[n]) for n, p in engine_ports.items()])
    async with running_router(table) as port:
        through = await tei_client(f"127.0.0.1:{port}")
    direct = await tei_client(f"127.0.0.1:{engine_ports['emb']}")
    assert through["model_id"] == "hash/384"
    assert through == direct
