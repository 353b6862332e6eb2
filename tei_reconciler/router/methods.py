"""The tei.v1 methods the router relays, and how each multiplexer RPC maps onto them.

One table drives both the `tei_multiplexer.v1.TeiMultiplexer` service and the plain `tei.v1`
services, so the two can never disagree on which backend method a call reaches.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import grpc

Handler = Callable[..., Any]


class Kind(enum.Enum):
    UNARY = "unary"
    BIDI = "bidi"  # stream -> stream
    CLIENT_STREAM = "client_stream"  # stream -> unary (RerankStream)


class Method:
    """A tei.v1 method; `inner` names its request in multiplexer error texts (tei-manager's)."""

    def __init__(self, service: str, name: str, kind: Kind, inner: str | None) -> None:
        self.service = service
        self.name = name
        self.kind = kind
        self.inner = inner
        self.path = f"/tei.v1.{service}/{name}"


TEI_METHODS: tuple[Method, ...] = (
    Method("Info", "Info", Kind.UNARY, None),
    Method("Embed", "Embed", Kind.UNARY, "embed"),
    Method("Embed", "EmbedStream", Kind.BIDI, "embed"),
    Method("Embed", "EmbedSparse", Kind.UNARY, "embed_sparse"),
    Method("Embed", "EmbedSparseStream", Kind.BIDI, "embed_sparse"),
    Method("Embed", "EmbedAll", Kind.UNARY, "embed_all"),
    Method("Embed", "EmbedAllStream", Kind.BIDI, "embed_all"),
    Method("Predict", "Predict", Kind.UNARY, "predict"),
    Method("Predict", "PredictPair", Kind.UNARY, "predict_pair"),
    Method("Predict", "PredictStream", Kind.BIDI, "predict"),
    Method("Predict", "PredictPairStream", Kind.BIDI, "predict_pair"),
    Method("Rerank", "Rerank", Kind.UNARY, "rerank"),
    Method("Rerank", "RerankStream", Kind.CLIENT_STREAM, "rerank"),
    Method("Tokenize", "Tokenize", Kind.UNARY, "tokenize"),
    Method("Tokenize", "TokenizeStream", Kind.BIDI, "tokenize"),
    Method("Tokenize", "Decode", Kind.UNARY, "decode"),
    Method("Tokenize", "DecodeStream", Kind.BIDI, "decode"),
)

TEI_SERVICES: tuple[str, ...] = tuple(dict.fromkeys(f"tei.v1.{m.service}" for m in TEI_METHODS))
MULTIPLEXER_SERVICE = "tei_multiplexer.v1.TeiMultiplexer"


def method_handler(
    method: Method, unary: Callable[[Method], Handler], streaming: Callable[[Method], Handler]
) -> grpc.RpcMethodHandler:
    """grpc's handler for `method`, around `unary(method)` or `streaming(method)` by its kind."""
    if method.kind is Kind.UNARY:
        return grpc.unary_unary_rpc_method_handler(unary(method))
    if method.kind is Kind.BIDI:
        return grpc.stream_stream_rpc_method_handler(streaming(method))
    return grpc.stream_unary_rpc_method_handler(streaming(method))
