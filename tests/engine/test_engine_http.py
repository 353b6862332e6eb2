"""The HTTP build (`--http`): TEI's routes, JSON shapes, error bodies, codes and headers."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.engines import running

KEY = {"authorization": "Bearer k3y"}
EMPTY = "Input validation error: `inputs` cannot be empty"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    extra = ("--api-key", "k3y", "--payload-limit", "20000", "--served-model-name", "mini")
    with (
        running("hash/16", *extra, http=True) as engine,
        httpx.Client(base_url=engine.url, headers=KEY, timeout=30) as http,
    ):
        yield http


@pytest.fixture(scope="module")
def reranker() -> Iterator[httpx.Client]:
    with (
        running("hash/reranker", "--max-concurrent-requests", "3", http=True) as engine,
        httpx.Client(base_url=engine.url, timeout=30) as http,
    ):
        yield http


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_embed_returns_one_normalized_vector_per_input(client: httpx.Client) -> None:
    single = client.post("/embed", json={"inputs": "hello"})
    assert single.status_code == 200
    assert len(single.json()) == 1
    batch = client.post("/embed", json={"inputs": ["hello", "world"]}).json()
    assert batch[0] == single.json()[0]
    assert [norm(v) for v in batch] == pytest.approx([1.0, 1.0])
    raw = client.post("/embed", json={"inputs": "hello", "normalize": False}).json()
    assert norm(raw[0]) != pytest.approx(1.0, abs=1e-3)
    short = client.post("/embed", json={"inputs": "hello", "dimensions": 3}).json()
    assert len(short[0]) == 3


def test_embed_sets_tei_compute_headers(client: httpx.Client) -> None:
    answer = client.post("/embed", json={"inputs": ["ab", "cde"]})
    assert answer.headers["x-compute-type"] == "gpu+optimized"
    assert answer.headers["x-compute-characters"] == "5"
    assert answer.headers["x-compute-tokens"] == "9"
    for name in ("x-compute-time", "x-total-time", "x-tokenization-time", "x-queue-time",
                 "x-inference-time"):  # fmt: skip
        assert answer.headers[name].isdigit()
    assert "x-compute-type" not in client.post("/tokenize", json={"inputs": "a"}).headers


def test_token_id_inputs_embed_like_their_text(client: httpx.Client) -> None:
    tokens = client.post("/tokenize", json={"inputs": "hi"}).json()
    ids = [t["id"] for t in tokens[0]]
    by_ids = client.post("/embed", json={"inputs": ids}).json()
    assert by_ids == client.post("/embed", json={"inputs": "hi"}).json()
    mixed = client.post("/embed", json={"inputs": ["hi", ids]}).json()
    assert mixed[0] == mixed[1]
    too_long = client.post("/embed", json={"inputs": [1000] * 513, "truncate": False})
    assert too_long.status_code == 422


def test_embed_all_and_tokenize_and_decode_shapes(client: httpx.Client) -> None:
    rows = client.post("/embed_all", json={"inputs": ["ab", "c"]}).json()
    assert [len(r) for r in rows] == [4, 3]
    tokens = client.post("/tokenize", json={"inputs": ["hé"]}).json()
    assert tokens[0][0] == {
        "id": 101,
        "text": "[CLS]",
        "special": True,
        "start": None,
        "stop": None,
    }
    assert [(t["text"], t["start"], t["stop"]) for t in tokens[0][1:3]] == [
        ("h", 0, 1),
        ("é", 1, 3),
    ]
    ids = [t["id"] for t in tokens[0]]
    assert client.post("/decode", json={"ids": ids}).json() == ["hé"]
    decoded = client.post("/decode", json={"ids": [ids, ids], "skip_special_tokens": False})
    assert decoded.json() == ["[CLS]hé[SEP]"] * 2


def test_similarity_scores_each_sentence_against_the_source(client: httpx.Client) -> None:
    body = {"inputs": {"source_sentence": "same", "sentences": ["same", "different"]}}
    scores = client.post("/similarity", json=body).json()
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] < 0.99


def test_openai_embeddings_in_float_and_base64(client: httpx.Client) -> None:
    answer = client.post("/v1/embeddings", json={"input": ["a", "b"], "model": "x"}).json()
    assert answer["object"] == "list"
    assert answer["model"] == "mini"
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert answer["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    encoded = client.post("/embeddings", json={"input": "a", "encoding_format": "base64"}).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    floats = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert floats == pytest.approx(answer["data"][0]["embedding"], abs=1e-6)
    error = client.post("/v1/embeddings", json={"input": "a", "dimensions": 99})
    assert error.status_code == 422
    assert error.json()["type"] == "Validation"
    assert error.json()["code"] == 422


def test_info_shape(client: httpx.Client) -> None:
    info = client.get("/info").json()
    assert list(info) == [
        "model_id", "model_sha", "model_dtype", "served_model_name", "model_type",
        "max_concurrent_requests", "max_input_length", "max_batch_tokens", "max_batch_requests",
        "max_client_batch_size", "auto_truncate", "tokenization_workers", "version", "sha",
        "docker_label",
    ]  # fmt: skip
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["served_model_name"] == "mini"
    assert info["auto_truncate"] is True


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type", "message"),
    [
        ("/embed", {"inputs": ["x"] * 33}, 422, "Validation",
         "batch size 33 > maximum allowed batch size 32"),
        ("/embed", {"inputs": ""}, 400, "Empty", EMPTY),
        ("/embed", {"inputs": []}, 400, "Empty", EMPTY),
        ("/embed", {"inputs": "a" * 600, "truncate": False}, 422, "Validation",
         "Input validation error: `inputs` must have less than 512 tokens. Given: 602"),
        ("/predict", {"inputs": "x"}, 424, "Backend",
         "Backend error: Model is not a classifier model"),
        ("/embed_sparse", {"inputs": "x"}, 424, "Backend", None),
        ("/rerank", {"query": "q", "texts": ["a"]}, 424, "Backend",
         "Backend error: model is not a classifier model"),
        ("/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}, 400, "Empty", None),
    ],
)  # fmt: skip
def test_tei_errors_have_tei_bodies_and_codes(
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    status: int,
    error_type: str,
    message: str | None,
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == status
    assert answer.json()["error_type"] == error_type
    if message is not None:
        assert answer.json()["error"] == message


def test_auto_truncate_applies_when_truncate_is_null(client: httpx.Client) -> None:
    answer = client.post("/embed", json={"inputs": "a" * 600})
    assert answer.status_code == 200
    assert answer.headers["x-compute-tokens"] == "512"


def test_malformed_requests_get_axum_plain_text_errors(client: httpx.Client) -> None:
    too_big = client.post("/embed", json={"inputs": "a" * 30000})
    assert too_big.status_code == 413
    assert too_big.text == "Failed to buffer the request body: length limit exceeded"
    not_json = client.post("/embed", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.text.startswith("Failed to parse the request body as JSON")
    wrong_shape = client.post("/embed", json={"inputs": 5})
    assert wrong_shape.status_code == 422
    assert wrong_shape.text.startswith("Failed to deserialize the JSON body")
    no_type = client.post("/embed", content=b'{"inputs":"a"}')
    assert no_type.status_code == 415
    assert client.get("/nope").status_code == 404


def test_api_key_guards_inference_but_not_health_or_metrics(client: httpx.Client) -> None:
    base = str(client.base_url)
    denied = httpx.post(f"{base}/embed", json={"inputs": "a"})
    assert denied.status_code == 401
    assert denied.content == b""
    assert httpx.get(f"{base}/info").status_code == 401
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/health").content == b""
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200
    assert "te_request_count" in metrics.text


def test_rerank_and_predict_on_a_reranker(reranker: httpx.Client) -> None:
    texts = ["nothing shared", "a man eating", "a man"]
    ranks = reranker.post(
        "/rerank", json={"query": "a man eating", "texts": texts, "return_text": True}
    ).json()
    assert next(r["index"] for r in ranks) == 1
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert all(r["text"] == texts[r["index"]] for r in ranks)
    plain = reranker.post("/rerank", json={"query": "q", "texts": ["a"]}).json()
    assert list(plain[0]) == ["index", "score"]
    empty = reranker.post("/rerank", json={"query": "q", "texts": []})
    assert empty.status_code == 400
    assert empty.json() == {"error": "`texts` cannot be empty", "error_type": "Empty"}
    single = reranker.post("/predict", json={"inputs": ["q", "a"]}).json()
    assert [p["label"] for p in single] == ["LABEL_0"]
    batch = reranker.post("/predict", json={"inputs": [["q", "a"], ["b"]]}).json()
    assert len(batch) == 2
    embed = reranker.post("/embed", json={"inputs": "x"})
    assert embed.status_code == 424
    assert embed.json()["error"] == "Backend error: Model is not an embedding model"
    alias = reranker.post("/", json={"query": "q", "texts": ["a", "b"]})
    assert alias.status_code == 200
    assert len(alias.json()) == 2
    info = reranker.get("/info").json()
    assert info["model_type"] == {
        "reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    }


def test_a_batch_needing_more_permits_than_free_is_overloaded(reranker: httpx.Client) -> None:
    answer = reranker.post("/rerank", json={"query": "q", "texts": ["a", "b", "c", "d"]})
    assert answer.status_code == 429
    assert answer.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}


def test_vertex_wraps_each_instance_in_predictions(client: httpx.Client) -> None:
    answer = client.post("/vertex", json={"instances": [{"inputs": "a"}, {"inputs": ["b", "c"]}]})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert [len(p) for p in predictions] == [1, 2]
    assert predictions[0] == client.post("/embed", json={"inputs": "a"}).json()


def test_cors_allows_any_origin_by_default(client: httpx.Client) -> None:
    preflight = client.options(
        "/embed",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in {"*", "https://app.example"}
    assert "POST" in preflight.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/similarity", {"inputs": {"source_sentence": "a", "sentences": [1, 2]}}),
        ("/embed", {"inputs": [-1]}),
        ("/embed", {"inputs": [[5, 2**32]]}),
        ("/decode", {"ids": [-1]}),
        ("/decode", {"ids": [[1], [2, True]]}),
    ],
)
def test_values_outside_tei_types_are_rejected_as_bad_shape_not_server_errors(
    client: httpx.Client, route: str, body: dict[str, Any]
) -> None:
    answer = client.post(route, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.text.startswith("Failed to deserialize the JSON body")
