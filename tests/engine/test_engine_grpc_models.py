"""The gRPC build with SPLADE, classifier and reranker models, API keys and overload."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.engines import Engine, running
from support.waiting import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def channel_to(engine: Engine) -> grpc.Channel:
    return grpc.insecure_channel(engine.target)


@pytest.fixture(scope="module")
def splade() -> Iterator[grpc.Channel]:
    with running("hash/splade") as engine, channel_to(engine) as channel:
        yield channel


@pytest.fixture(scope="module")
def classifier() -> Iterator[grpc.Channel]:
    with running("hash/classifier") as engine, channel_to(engine) as channel:
        yield channel


@pytest.fixture(scope="module")
def reranker() -> Iterator[grpc.Channel]:
    with (
        running("hash/reranker", "--max-client-batch-size", "4") as engine,
        channel_to(engine) as channel,
    ):
        yield channel


def test_embed_sparse_returns_only_non_zero_entries(splade: grpc.Channel) -> None:
    stub = tei_pb2_grpc.EmbedStub(splade)
    answer = stub.EmbedSparse(tei_pb2.EmbedSparseRequest(inputs="sparse words"))
    values = list(answer.sparse_embeddings)
    assert values
    assert all(v.value != 0 for v in values)
    assert len({v.index for v in values}) == len(values)
    streamed = list(
        stub.EmbedSparseStream(iter([tei_pb2.EmbedSparseRequest(inputs=t) for t in "abc"]))
    )
    assert [len(s.sparse_embeddings) for s in streamed] == [1, 1, 1]
    assert streamed[0].sparse_embeddings != streamed[1].sparse_embeddings


def test_predict_returns_every_label_sorted_by_softmax_score(classifier: grpc.Channel) -> None:
    stub = tei_pb2_grpc.PredictStub(classifier)
    answer = stub.Predict(tei_pb2.PredictRequest(inputs="I love it"))
    scores = [p.score for p in answer.predictions]
    assert {p.label for p in answer.predictions} == {"negative", "positive"}
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    raw = stub.Predict(tei_pb2.PredictRequest(inputs="I love it", raw_scores=True))
    assert sum(p.score for p in raw.predictions) != pytest.approx(1.0, abs=1e-3)


def test_predict_pair_needs_one_or_two_inputs(classifier: grpc.Channel) -> None:
    stub = tei_pb2_grpc.PredictStub(classifier)
    pair = stub.PredictPair(tei_pb2.PredictPairRequest(inputs=["a", "b"]))
    assert len(pair.predictions) == 2
    with pytest.raises(grpc.RpcError) as rejected:
        stub.PredictPair(tei_pb2.PredictPairRequest(inputs=["a", "b", "c"]))
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rejected.value.details() == "`inputs` must have a single or two elements. Given: 3"


def test_predict_streams_answer_in_request_order(classifier: grpc.Channel) -> None:
    stub = tei_pb2_grpc.PredictStub(classifier)
    texts = [f"input {i}" for i in range(20)]
    expected = [stub.Predict(tei_pb2.PredictRequest(inputs=t)).predictions for t in texts]
    streamed = stub.PredictStream(iter([tei_pb2.PredictRequest(inputs=t) for t in texts]))
    assert [a.predictions for a in streamed] == expected
    pairs = stub.PredictPairStream(
        iter([tei_pb2.PredictPairRequest(inputs=["q", t]) for t in texts])
    )
    assert len(list(pairs)) == 20


def test_classifier_answers_embed_and_rerank_with_failed_precondition(
    classifier: grpc.Channel,
) -> None:
    with pytest.raises(grpc.RpcError) as embed:
        tei_pb2_grpc.EmbedStub(classifier).Embed(tei_pb2.EmbedRequest(inputs="x"))
    assert embed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert embed.value.details() == "Backend error: Model is not an embedding model"
    with pytest.raises(grpc.RpcError) as rerank:
        tei_pb2_grpc.RerankStub(classifier).Rerank(tei_pb2.RerankRequest(query="q", texts=["a"]))
    assert rerank.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rerank.value.details() == "model is not a re-ranker model"


def health_by_service(channel: grpc.Channel) -> dict[str, int]:
    """The health status of each model service of an engine."""
    health = health_pb2_grpc.HealthStub(channel)
    return {
        s: health.Check(health_pb2.HealthCheckRequest(service=s)).status
        for s in ("tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank")
    }


def test_classifier_health_serves_predict_only(classifier: grpc.Channel) -> None:
    assert health_by_service(classifier) == {
        "tei.v1.Embed": NOT_SERVING,
        "tei.v1.Predict": SERVING,
        "tei.v1.Rerank": NOT_SERVING,
    }


def test_rerank_sorts_by_score_and_keeps_text_positions(reranker: grpc.Channel) -> None:
    stub = tei_pb2_grpc.RerankStub(reranker)
    texts = ["stock market news", "a man is eating bread", "a man eating"]
    answer, call = stub.Rerank.with_call(
        tei_pb2.RerankRequest(query="a man eating", texts=texts, return_text=True)
    )
    ranks = list(answer.ranks)
    assert [r.score for r in ranks] == sorted((r.score for r in ranks), reverse=True)
    assert ranks[0].index == 2
    assert ranks[-1].index == 0
    assert all(r.text == texts[r.index] for r in ranks)
    assert dict(call.initial_metadata())["x-compute-type"] == "gpu+optimized"
    plain = stub.Rerank(tei_pb2.RerankRequest(query="a man eating", texts=texts))
    assert not any(r.HasField("text") for r in plain.ranks)
    assert all(0 < r.score < 1 for r in plain.ranks)


def test_rerank_validates_texts(reranker: grpc.Channel) -> None:
    stub = tei_pb2_grpc.RerankStub(reranker)
    with pytest.raises(grpc.RpcError) as empty:
        stub.Rerank(tei_pb2.RerankRequest(query="q", texts=[]))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.details() == "`texts` cannot be empty"
    with pytest.raises(grpc.RpcError) as big:
        stub.Rerank(tei_pb2.RerankRequest(query="q", texts=["t"] * 5))
    assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert big.value.details() == "batch size 5 > maximum allowed batch size 4"


def test_rerank_stream_indexes_by_stream_position_without_a_batch_limit(
    reranker: grpc.Channel,
) -> None:
    stub = tei_pb2_grpc.RerankStub(reranker)
    texts = ["unrelated"] * 5 + ["query words here"]
    messages = [
        tei_pb2.RerankStreamRequest(query="query words here", text=t, return_text=i == 0)
        for i, t in enumerate(texts)
    ]
    answer = stub.RerankStream(iter(messages))
    assert len(answer.ranks) == 6
    assert answer.ranks[0].index == 5
    assert answer.ranks[0].text == "query words here"


def test_reranker_health_serves_predict_and_rerank(reranker: grpc.Channel) -> None:
    assert health_by_service(reranker) == {
        "tei.v1.Embed": NOT_SERVING,
        "tei.v1.Predict": SERVING,
        "tei.v1.Rerank": SERVING,
    }


def test_api_key_guards_tei_services_but_not_health() -> None:
    with running("hash/8", "--api-key", "s3cret") as engine, channel_to(engine) as channel:
        stub = tei_pb2_grpc.InfoStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.Info(tei_pb2.InfoRequest())
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert denied.value.details() == "No valid auth token"
        with pytest.raises(grpc.RpcError) as wrong:
            stub.Info(tei_pb2.InfoRequest(), metadata=[("authorization", "Bearer nope")])
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        streamed = tei_pb2_grpc.EmbedStub(channel).EmbedStream(
            iter([tei_pb2.EmbedRequest(inputs="x")])
        )
        with pytest.raises(grpc.RpcError) as stream_denied:
            list(streamed)
        assert stream_denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = stub.Info(tei_pb2.InfoRequest(), metadata=[("authorization", "Bearer s3cret")])
        assert info.model_id == "hash/8"
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING


def test_unary_calls_beyond_max_concurrent_requests_are_overloaded(tmp_path: Path) -> None:
    release = tmp_path / "release"  # the first request stays in flight until this exists
    with (
        running(
            "hash/8", "--max-concurrent-requests", "1", faults=f"hold_until={release}"
        ) as engine,
        channel_to(engine) as channel,
    ):
        stub = tei_pb2_grpc.EmbedStub(channel)
        slow = threading.Thread(
            target=stub.Embed, args=(tei_pb2.EmbedRequest(inputs="slow"),), daemon=True
        )
        slow.start()
        metrics = f"http://127.0.0.1:{engine.prom_port}/metrics"
        wait_until(lambda: "te_embed_count 1" in httpx.get(metrics).text, "the first request")
        with pytest.raises(grpc.RpcError) as overloaded:
            stub.Embed(tei_pb2.EmbedRequest(inputs="second"))
        assert overloaded.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert overloaded.value.details() == "Model is overloaded"
        release.touch()
        slow.join(timeout=30)
        assert not slow.is_alive()
        assert 'te_request_failure{err="overloaded"} 1' in httpx.get(metrics).text
