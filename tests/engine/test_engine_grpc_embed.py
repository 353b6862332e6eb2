"""The gRPC build with an embedding model: every tei.v1 RPC against a real engine process."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.engines import Engine, running

X_HEADERS = {
    "x-compute-type", "x-compute-time", "x-compute-characters", "x-compute-tokens",
    "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time",
}  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running("hash/16", "--revision", "abc123") as started:
        yield started


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(engine.target) as ch:
        yield ch


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_info_reports_the_model_and_limits(channel: grpc.Channel) -> None:
    info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest())
    assert info.model_id == "hash/16"
    assert info.model_sha == "abc123"
    assert info.model_type == tei_pb2.MODEL_TYPE_EMBEDDING
    assert info.max_client_batch_size == 32
    assert info.max_concurrent_requests == 512
    assert info.max_batch_tokens == 16384
    assert not info.HasField("max_batch_requests")


def test_embed_normalizes_when_normalize_is_unset(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    default = stub.Embed(tei_pb2.EmbedRequest(inputs="hello world"))
    raw = stub.Embed(tei_pb2.EmbedRequest(inputs="hello world", normalize=False))
    assert len(default.embeddings) == 16
    assert norm(list(default.embeddings)) == pytest.approx(1.0, abs=1e-5)
    assert norm(list(raw.embeddings)) != pytest.approx(1.0, abs=1e-3)
    assert default.metadata.compute_chars == 11
    assert default.metadata.compute_tokens == 13  # 11 characters plus [CLS] and [SEP]


def test_same_text_gives_the_same_vector(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    first = stub.Embed(tei_pb2.EmbedRequest(inputs="same"))
    second = stub.Embed(tei_pb2.EmbedRequest(inputs="same"))
    other = stub.Embed(tei_pb2.EmbedRequest(inputs="other"))
    assert list(first.embeddings) == list(second.embeddings)
    assert list(first.embeddings) != list(other.embeddings)


def test_dimensions_truncate_the_vector_then_normalize(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    short = stub.Embed(tei_pb2.EmbedRequest(inputs="matryoshka", dimensions=4))
    assert len(short.embeddings) == 4
    assert norm(list(short.embeddings)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(grpc.RpcError) as too_many:
        stub.Embed(tei_pb2.EmbedRequest(inputs="x", dimensions=17))
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unary_embed_returns_tei_x_headers_as_initial_metadata(channel: grpc.Channel) -> None:
    _, call = tei_pb2_grpc.EmbedStub(channel).Embed.with_call(tei_pb2.EmbedRequest(inputs="ab"))
    metadata = dict(call.initial_metadata())
    assert metadata.keys() >= X_HEADERS
    assert metadata["x-compute-type"] == "gpu+optimized"
    assert metadata["x-compute-characters"] == "2"
    assert metadata["x-compute-tokens"] == "4"


def test_too_long_input_is_rejected_unless_truncated(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    with pytest.raises(grpc.RpcError) as rejected:
        stub.Embed(tei_pb2.EmbedRequest(inputs="a" * 600))
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rejected.value.details() == (
        "Input validation error: `inputs` must have less than 512 tokens. Given: 602"
    )
    right = stub.Embed(tei_pb2.EmbedRequest(inputs="a" * 600 + "b", truncate=True))
    left = stub.Embed(
        tei_pb2.EmbedRequest(
            inputs="b" + "a" * 600,
            truncate=True,
            truncation_direction=tei_pb2.TRUNCATION_DIRECTION_LEFT,
        )
    )
    assert right.metadata.compute_tokens == 512
    assert list(right.embeddings) == list(left.embeddings)  # both keep 510 x "a"


def test_empty_input_is_invalid_argument(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as rejected:
        tei_pb2_grpc.EmbedStub(channel).Embed(tei_pb2.EmbedRequest(inputs=""))
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rejected.value.details() == "Input validation error: `inputs` cannot be empty"


def test_embed_stream_answers_in_request_order(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    texts = [f"text {i} " * (40 - i) for i in range(40)]
    expected = [list(stub.Embed(tei_pb2.EmbedRequest(inputs=t)).embeddings) for t in texts]
    answers = stub.EmbedStream(iter([tei_pb2.EmbedRequest(inputs=t) for t in texts]))
    assert [list(a.embeddings) for a in answers] == expected


def test_a_failing_stream_message_ends_the_call_with_its_status(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    requests = [tei_pb2.EmbedRequest(inputs="ok"), tei_pb2.EmbedRequest(inputs="")]
    answers = stub.EmbedStream(iter(requests))
    with pytest.raises(grpc.RpcError) as failed:
        list(answers)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_embed_all_returns_one_vector_per_token(channel: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(channel)
    answer = stub.EmbedAll(tei_pb2.EmbedAllRequest(inputs="abc"))
    assert len(answer.token_embeddings) == 5
    assert {len(t.embeddings) for t in answer.token_embeddings} == {16}
    streamed = list(stub.EmbedAllStream(iter([tei_pb2.EmbedAllRequest(inputs="abc")] * 3)))
    assert [len(a.token_embeddings) for a in streamed] == [5, 5, 5]


def test_sparse_and_predict_and_rerank_fail_the_precondition_on_an_embedding_model(
    channel: grpc.Channel,
) -> None:
    calls: list[tuple[Callable[[], object], str | None]] = [
        (lambda: tei_pb2_grpc.EmbedStub(channel).EmbedSparse(
            tei_pb2.EmbedSparseRequest(inputs="x")), None),
        (lambda: tei_pb2_grpc.PredictStub(channel).Predict(tei_pb2.PredictRequest(inputs="x")),
         "Backend error: Model is not a classifier model"),
        (lambda: tei_pb2_grpc.RerankStub(channel).Rerank(
            tei_pb2.RerankRequest(query="q", texts=["a"])), "model is not a classifier model"),
    ]  # fmt: skip
    for call, message in calls:
        with pytest.raises(grpc.RpcError) as failed:
            call()
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        if message is not None:
            assert failed.value.details() == message


def test_tokenize_gives_byte_offsets_and_decode_inverts_it(channel: grpc.Channel) -> None:
    tokenize = tei_pb2_grpc.TokenizeStub(channel)
    answer = tokenize.Tokenize(tei_pb2.EncodeRequest(inputs="hé!", add_special_tokens=True))
    tokens = list(answer.tokens)
    assert [t.special for t in tokens] == [True, False, False, False, True]
    assert not tokens[0].HasField("start")
    assert [(t.text, t.start, t.stop) for t in tokens[1:4]] == [
        ("h", 0, 1),
        ("é", 1, 3),
        ("!", 3, 4),
    ]
    ids = [t.id for t in tokens]
    kept = tokenize.Decode(tei_pb2.DecodeRequest(ids=ids, skip_special_tokens=True))
    assert kept.text == "hé!"
    streamed = list(
        tokenize.DecodeStream(iter([tei_pb2.DecodeRequest(ids=ids, skip_special_tokens=False)]))
    )
    assert streamed[0].text == "[CLS]hé![SEP]"
    plain = list(tokenize.TokenizeStream(iter([tei_pb2.EncodeRequest(inputs="ab")])))
    assert [t.text for t in plain[0].tokens] == ["a", "b"]


def test_health_serves_the_embedding_services_only(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    expected = {
        "": serving, "tei.v1.Info": serving, "tei.v1.Tokenize": serving,
        "tei.v1.Embed": serving, "tei.v1.Predict": not_serving, "tei.v1.Rerank": not_serving,
    }  # fmt: skip
    got = {s: health.Check(health_pb2.HealthCheckRequest(service=s)).status for s in expected}
    assert got == expected
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="tei.v1.Nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_tei_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answer = next(iter(stub.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in answer.list_services_response.service}
    assert {"tei.v1.Info", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank"} <= names
    assert "tei.v1.Tokenize" in names
    symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="tei.v1.Embed")
    found = next(iter(stub.ServerReflectionInfo(iter([symbol]))))
    assert found.file_descriptor_response.file_descriptor_proto


def test_prometheus_port_serves_health_and_tei_metric_names(
    engine: Engine, channel: grpc.Channel
) -> None:
    tei_pb2_grpc.EmbedStub(channel).Embed(tei_pb2.EmbedRequest(inputs="count me"))
    base = f"http://127.0.0.1:{engine.prom_port}"
    assert httpx.get(f"{base}/health").text == "OK"
    text = httpx.get(f"{base}/metrics").text
    assert 'te_request_count{method="single"}' in text
    assert "te_embed_success " in text
    assert "te_request_duration_bucket" in text
    assert "_total" not in text


def test_ready_is_logged_after_the_grpc_server_starts(engine: Engine) -> None:
    log = engine.log()
    assert log.index("Starting gRPC server: 127.0.0.1:") < log.index("Ready")


def test_the_log_names_the_addresses_really_bound(engine: Engine) -> None:
    log = engine.log()
    assert f"Starting gRPC server: 127.0.0.1:{engine.port}" in log
    assert f"Serving Prometheus metrics: 127.0.0.1:{engine.prom_port}" in log
