"""Drives the PyPI `tei-client` against an engine and prints what it got as JSON.

Run in its own process: tei-client's bundled stubs register `tei.proto` in the global protobuf
pool, which clashes with the project's own stubs in the test process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tei_client import GrpcClient, HttpClient


def grpc_embedding(target: str) -> dict[str, Any]:
    client = GrpcClient(target)
    vectors = client.embed(["first", "second", "third"])
    tokens = client.tokenize(["hé"])[0].tokens
    return {
        "model_type": client.info().server_model_type.value,
        "dims": [len(v) for v in vectors],
        "distinct": len({tuple(v) for v in vectors}),
        "embed_all": [len(t) for t in client.embed_all(["ab"])],
        "tokens": [(t.text, t.start, t.stop) for t in tokens],
        "decode": client.decode([t.id for t in tokens]),
        "prompt_names": client.prompt_names(),
    }


def grpc_classifier(target: str) -> dict[str, Any]:
    client = GrpcClient(target)
    results = client.classify(["a text", ("premise", "hypothesis")])
    return {"labels": [[s.label for s in r.scores] for r in results]}


def grpc_reranker(target: str) -> dict[str, Any]:
    client = GrpcClient(target)
    result = client.rerank("a man eating", ["stocks", "a man eating"], return_text=True)
    return {"ranks": [(r.index, r.text) for r in result.ranks]}


def http_embedding(url: str) -> dict[str, Any]:
    client = HttpClient(url)
    vectors = client.embed(["first", "second"])
    return {
        "health": client.health(),
        "model_type": client.info().server_model_type.value,
        "dims": [len(v) for v in vectors],
        "decode": client.decode([101, 1097, 102]),
    }


if __name__ == "__main__":
    mode, address = sys.argv[1], sys.argv[2]
    result = {
        "grpc_embedding": grpc_embedding,
        "grpc_classifier": grpc_classifier,
        "grpc_reranker": grpc_reranker,
        "http_embedding": http_embedding,
    }[mode](address)
    sys.stdout.write(json.dumps(result))
