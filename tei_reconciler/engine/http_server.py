"""TEI's HTTP build (`--http`): the Starlette app and its hypercorn server.

Inference routes live in `http_routes`; this module adds the public routes (`/health`, GET
`/`, `/ping`, `/metrics`), `/info`, TEI's SageMaker and Vertex aliases and CORS, and serves
the app on a socket the lifecycle already bound, so bind errors surface before "Ready".
SIGTERM drains in-flight requests without a time limit, as TEI does.
"""

from __future__ import annotations

import math
import socket
from argparse import Namespace
from collections.abc import Callable
from typing import Any

import anyio
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tei_reconciler import __version__
from tei_reconciler.engine.faults import Faults
from tei_reconciler.engine.http_routes import HttpApi
from tei_reconciler.engine.infer import Infer
from tei_reconciler.engine.metrics import CONTENT_TYPE
from tei_reconciler.engine.types import ModelType

_MODEL_TYPE = {
    ModelType.EMBEDDING: "embedding",
    ModelType.CLASSIFIER: "classifier",
    ModelType.RERANKER: "reranker",
}


def info_body(api: HttpApi) -> dict[str, Any]:
    """`/info`, keys in TEI's order; `model_type` is externally tagged."""
    backend, limits, args = api.infer.backend, api.infer.limits, api.args
    if backend.model_type is ModelType.EMBEDDING:
        details: dict[str, Any] = {"pooling": backend.pooling.replace("-", "_")}
    else:
        details = {
            "id2label": {str(k): v for k, v in backend.id2label.items()},
            "label2id": {v: k for k, v in backend.id2label.items()},
        }
    return {
        "model_id": args.model_id,
        "model_sha": args.revision,
        "model_dtype": args.dtype or backend.dtype,
        "served_model_name": api.served_name(),
        "model_type": {_MODEL_TYPE[backend.model_type]: details},
        "max_concurrent_requests": limits.max_concurrent_requests,
        "max_input_length": backend.max_input_length,
        "max_batch_tokens": limits.max_batch_tokens,
        "max_batch_requests": limits.max_batch_requests,
        "max_client_batch_size": limits.max_client_batch_size,
        "auto_truncate": limits.auto_truncate,
        "tokenization_workers": args.tokenization_workers,
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }


def build_app(api: HttpApi) -> Starlette:
    faults = api.faults

    async def info(request: Request) -> Response:
        if api.auth and request.headers.get("authorization") != api.auth:
            return Response(status_code=401)
        return JSONResponse(info_body(api))

    async def health(request: Request) -> Response:
        if faults.health == "hang":
            await anyio.sleep_forever()
        if faults.health == "fail":
            return JSONResponse({"error": "unhealthy", "error_type": "Unhealthy"}, 503)
        return Response(status_code=200)

    async def metrics(request: Request) -> Response:
        return Response(api.infer.metrics.render(), media_type=CONTENT_TYPE)

    alias = api.route(api.default_route())

    async def root(request: Request) -> Response:
        return await (alias if request.method == "POST" else health)(request)

    post = {
        "/embed": api.route(api.embed),
        "/embed_all": api.route(api.embed_all),
        "/embed_sparse": api.route(api.embed_sparse),
        "/predict": api.route(api.predict),
        "/rerank": api.route(api.rerank),
        "/similarity": api.route(api.similarity),
        "/tokenize": api.route(api.tokenize),
        "/decode": api.route(api.decode),
        "/embeddings": api.route(api.openai, openai=True),
        "/v1/embeddings": api.route(api.openai, openai=True),
        "/vertex": api.route(api.vertex),
        "/invocations": alias,
    }
    routes = [Route(path, fn, methods=["POST"]) for path, fn in post.items()]
    routes += [
        Route("/", root, methods=["GET", "POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ping", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=api.args.cors_allow_origin or ["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["content-type"],
    )
    return Starlette(routes=routes, middleware=[cors])


async def serve_http(
    args: Namespace,
    infer: Infer,
    sock: socket.socket,
    stop: anyio.Event,
    faults: Faults,
    *,
    ready: Callable[[], None],
) -> None:
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.graceful_timeout = math.inf
    config.accesslog = None
    config.errorlog = None
    app = build_app(HttpApi(args, infer, faults))
    sock.detach()  # hypercorn owns (and closes) the listening socket from here on
    ready()
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
