"""TEI's gRPC build on one port: the `tei.v1` services, grpc.health.v1 and reflection.

Health follows TEI: "", Info and Tokenize are SERVING from the start; of Embed, Predict and
Rerank only those that fit the model are. Reflection (v1alpha, like tonic-reflection 0.11)
lists the tei.v1 services. The API key guards tei.v1 only, never health or reflection.
"""

from __future__ import annotations

from typing import Any, cast

import anyio
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tei_reconciler import __version__
from tei_reconciler.engine.faults import Faults
from tei_reconciler.engine.grpc_services import (
    EmbedService,
    InfoService,
    PredictService,
    RerankService,
    TokenizeService,
)
from tei_reconciler.engine.infer import Infer
from tei_reconciler.engine.types import ModelType
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

SERVICES = ("tei.v1.Info", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank", "tei.v1.Tokenize")


class FaultyHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """The library servicer, plus the `health=hang` fault (Check never answers)."""

    def __init__(self, *, hang: bool) -> None:
        super().__init__()
        self._hang = hang

    async def Check(self, request: Any, context: Any) -> Any:
        if self._hang:
            await anyio.sleep_forever()
        if request.service not in self._server_status:
            await context.abort(grpc.StatusCode.NOT_FOUND, "service not registered")
        return await super().Check(request, context)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """TEI's interceptor: `authorization: Bearer <key>` on tei.v1; health and reflection open."""

    def __init__(self, api_key: str) -> None:
        self._expected = f"Bearer {api_key}"

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/tei.v1."):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if metadata.get("authorization") == self._expected:
            return handler

        async def deny(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "No valid auth token")

        kind = (handler.request_streaming, handler.response_streaming)
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[kind]
        return factory(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def build_server(
    infer: Infer, info: tei_pb2.InfoResponse, *, api_key: str | None, faults: Faults
) -> grpc.aio.Server:
    interceptors = [ApiKeyInterceptor(api_key)] if api_key else []
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    tei_pb2_grpc.add_InfoServicer_to_server(InfoService(info), server)
    tei_pb2_grpc.add_EmbedServicer_to_server(EmbedService(infer), server)
    tei_pb2_grpc.add_PredictServicer_to_server(PredictService(infer), server)
    tei_pb2_grpc.add_RerankServicer_to_server(RerankService(infer), server)
    tei_pb2_grpc.add_TokenizeServicer_to_server(TokenizeService(infer), server)

    checker = FaultyHealth(hang=faults.health == "hang")
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    live = {
        ModelType.EMBEDDING: {"tei.v1.Embed"},
        ModelType.CLASSIFIER: {"tei.v1.Predict"},
        ModelType.RERANKER: {"tei.v1.Predict", "tei.v1.Rerank"},
    }[infer.backend.model_type] | {"", "tei.v1.Info", "tei.v1.Tokenize"}
    failing = faults.health == "fail"
    for name in ("", *SERVICES):
        await checker.set(name, serving if name in live and not failing else not_serving)
    reflection.enable_server_reflection((*SERVICES, reflection.SERVICE_NAME), server)
    return server


def info_response(args: Any, infer: Infer) -> tei_pb2.InfoResponse:
    backend, limits = infer.backend, infer.limits
    return tei_pb2.InfoResponse(
        version=__version__,
        model_id=args.model_id,
        model_sha=args.revision,
        model_dtype=args.dtype or backend.dtype,
        model_type=cast("tei_pb2.ModelType.ValueType", backend.model_type.value),
        max_concurrent_requests=limits.max_concurrent_requests,
        max_input_length=backend.max_input_length,
        max_batch_tokens=limits.max_batch_tokens,
        max_batch_requests=limits.max_batch_requests,
        max_client_batch_size=limits.max_client_batch_size,
        tokenization_workers=args.tokenization_workers,
    )
