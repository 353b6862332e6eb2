"""The real all-MiniLM-L6-v2 (int8 ONNX) behind the gRPC and HTTP builds."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import httpx
import pytest

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.engines import Engine, running

pytestmark = pytest.mark.slow
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running(MODEL, "--inference-threads", "1") as started:
        yield started


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(engine.target) as ch:
        yield ch


def embed(channel: grpc.Channel, text: str) -> list[float]:
    stub = tei_pb2_grpc.EmbedStub(channel)
    return list(stub.Embed(tei_pb2.EmbedRequest(inputs=text)).embeddings)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_similar_sentences_are_far_closer_than_unrelated_ones(channel: grpc.Channel) -> None:
    food = embed(channel, "A man is eating food.")
    bread = embed(channel, "A man is eating a piece of bread.")
    stocks = embed(channel, "The stock market crashed today.")
    assert len(food) == 384
    assert cosine(food, bread) > 0.6
    assert cosine(food, stocks) < 0.2
    assert cosine(food, bread) - cosine(food, stocks) > 0.4


def test_vectors_have_unit_norm(channel: grpc.Channel) -> None:
    vector = embed(channel, "Unit norm, please.")
    assert math.sqrt(sum(v * v for v in vector)) == pytest.approx(1.0, abs=1e-5)


def test_info_advertises_the_models_limits(channel: grpc.Channel) -> None:
    info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest())
    assert info.model_id == MODEL
    assert info.max_input_length == 256
    assert info.model_type == tei_pb2.MODEL_TYPE_EMBEDDING


def test_tokenize_gives_wordpiece_tokens_with_byte_offsets(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.TokenizeStub(channel)
    text = "Café embeddings"
    tokens = list(stub.Tokenize(tei_pb2.EncodeRequest(inputs=text, add_special_tokens=True)).tokens)
    assert tokens[0].text == "[CLS]"
    assert tokens[0].special
    assert tokens[-1].text == "[SEP]"
    raw = text.encode()
    for token in tokens[1:-1]:
        piece = raw[token.start : token.stop].decode().lower()
        assert piece == token.text.lower()
    assert tokens[1].stop == 5  # "Café" is 4 characters, 5 bytes
    decoded = stub.Decode(
        tei_pb2.DecodeRequest(ids=[t.id for t in tokens], skip_special_tokens=True)
    )
    assert decoded.text == "cafe embeddings"


def test_embed_all_returns_a_vector_per_token_and_truncation_caps_at_256(
    channel: grpc.Channel,
) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    answer = stub.EmbedAll(tei_pb2.EmbedAllRequest(inputs="two words"))
    assert len(answer.token_embeddings) == 4
    assert len(answer.token_embeddings[0].embeddings) == 384
    long_text = "word " * 400
    with pytest.raises(grpc.RpcError) as rejected:
        stub.Embed(tei_pb2.EmbedRequest(inputs=long_text))
    assert rejected.value.details() == (
        "Input validation error: `inputs` must have less than 256 tokens. Given: 402"
    )
    cut = stub.Embed(tei_pb2.EmbedRequest(inputs=long_text, truncate=True))
    assert cut.metadata.compute_tokens == 256


def test_concurrent_stream_messages_match_single_requests(channel: grpc.Channel) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(24)]
    single = [embed(channel, t) for t in texts]
    stub = tei_pb2_grpc.EmbedStub(channel)
    streamed = [
        list(a.embeddings)
        for a in stub.EmbedStream(iter([tei_pb2.EmbedRequest(inputs=t) for t in texts]))
    ]
    for a, b in zip(single, streamed, strict=True):
        assert cosine(a, b) == pytest.approx(1.0, abs=1e-4)


def test_concurrent_requests_share_forward_passes(engine: Engine, channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    texts = [f"batched sentence {i}" for i in range(64)]
    assert len(list(stub.EmbedStream(iter([tei_pb2.EmbedRequest(inputs=t) for t in texts])))) == 64
    metrics = httpx.get(f"http://127.0.0.1:{engine.prom_port}/metrics").text
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line[0] != "#")
    singles = float(samples['te_batch_next_size_bucket{le="1.0"}'])
    batches = float(samples["te_batch_next_size_count"])
    assert batches > singles  # at least one forward pass carried several requests


def test_http_build_serves_the_real_model() -> None:
    with running(MODEL, "--inference-threads", "1", http=True) as engine:
        answer = httpx.post(
            f"{engine.url}/embed",
            json={"inputs": ["A man is eating food.", "A man is eating a piece of bread."]},
            timeout=30,
        )
        assert answer.status_code == 200
        food, bread = answer.json()
        assert cosine(food, bread) > 0.6
        info = httpx.get(f"{engine.url}/info").json()
        assert info["model_type"] == {"embedding": {"pooling": "mean"}}
