"""The inference routes of TEI's HTTP build, with TEI's JSON shapes, codes and headers.

Each route is an operation `dict -> (body, metadata, method)`; `HttpApi.route` wraps it with
the API key check, body parsing, metrics and TEI's error bodies. Batches take one permit per
item, like TEI, so a batch of 32 needs 32 free slots; items of a batch run concurrently and
share forward passes through the batcher.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import time
from argparse import Namespace
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tei_reconciler.engine.faults import Faults
from tei_reconciler.engine.http_io import (
    REQUIRED,
    Reject,
    direction_left,
    get,
    inputs_of,
    is_token_id,
    read_json,
    shape_error,
)
from tei_reconciler.engine.infer import Infer, Meta, average, tei_headers
from tei_reconciler.engine.types import EngineError, ErrorType, ModelType, Text

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def _error(error: EngineError, openai: bool = False) -> JSONResponse:
    status = error.kind.http_status
    if openai:
        body = {"message": error.message, "code": status, "type": error.kind.value}
        return JSONResponse(body, status_code=status)
    return JSONResponse({"error": error.message, "error_type": error.kind.value}, status)


class HttpApi:
    def __init__(self, args: Namespace, infer: Infer, faults: Faults) -> None:
        self.args = args
        self.infer = infer
        self.faults = faults
        self.auth = f"Bearer {args.api_key}" if args.api_key else None

    # -- plumbing ------------------------------------------------------------------------

    def route(
        self,
        work: Callable[[dict[str, Any]], Awaitable[tuple[Any, Meta | None, str]]],
        *,
        openai: bool = False,
        protected: bool = True,
    ) -> Handler:
        """Auth, body parsing, metrics and error mapping around one TEI operation."""

        async def endpoint(request: Request) -> Response:
            if protected and self.auth and request.headers.get("authorization") != self.auth:
                return Response(status_code=401)
            metrics = self.infer.metrics
            try:
                data = await read_json(request, self.args.payload_limit)
            except Reject as reject:
                return PlainTextResponse(reject.text, reject.status)
            first = next((data[k] for k in ("inputs", "input", "texts") if k in data), None)
            method = "batch" if isinstance(first, list) else "single"
            metrics.inc("te_request_count", method=method)
            try:
                body, meta, _ = await work(data)
            except Reject as reject:
                return PlainTextResponse(reject.text, reject.status)
            except EngineError as error:
                metrics.inc("te_request_failure", err=error.metric)
                return _error(error, openai)
            metrics.inc("te_request_success", method=method)
            if meta is None:
                return JSONResponse(body)
            return JSONResponse(body, headers=dict(tei_headers(meta)))

        return endpoint

    async def _each(
        self, texts: Sequence[T], one: Callable[[T], Awaitable[tuple[Any, Meta]]]
    ) -> tuple[list[Any], Meta]:
        """Run `one` for every item under per-item permits; results in input order."""
        self.infer.check_batch(len(texts))
        start = time.perf_counter_ns()
        results: list[tuple[Any, Meta] | None] = [None] * len(texts)
        errors: list[EngineError] = []
        with self.infer.try_permits(len(texts)):

            async def run(index: int, text: T) -> None:
                try:
                    results[index] = await one(text)
                except EngineError as error:
                    errors.append(error)

            async with anyio.create_task_group() as tg:
                for index, text in enumerate(texts):
                    tg.start_soon(run, index, text)
        if errors:
            raise errors[0]
        done = [r for r in results if r is not None]
        meta = average([m for _, m in done])
        total = time.perf_counter_ns() - start
        meta = dataclasses.replace(meta, total_time_ns=total)
        return [value for value, _ in done], meta

    def _texts(self, data: dict[str, Any], name: str = "inputs") -> tuple[list[Text], bool]:
        value = data.get(name)
        if value is None:
            raise shape_error(f"missing field `{name}`")
        return inputs_of(value)

    def _truncate(self, data: dict[str, Any]) -> bool:
        value: bool = get(data, "truncate", bool, self.args.auto_truncate)
        return value

    def _text_options(self, data: dict[str, Any]) -> dict[str, Any]:
        """How a request's texts are prepared: truncation, its side, the prompt."""
        return {
            "truncate": self._truncate(data),
            "left": direction_left(data),
            "prompt_name": get(data, "prompt_name", str, None),
        }

    # -- routes --------------------------------------------------------------------------

    async def embed(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        texts, batch = self._texts(data)
        options = self._text_options(data)
        normalize = get(data, "normalize", bool, True)
        dimensions = get(data, "dimensions", int, None)
        vectors, meta = await self._each(
            texts,
            lambda t: self.infer.embed(t, normalize=normalize, dimensions=dimensions, **options),
        )
        return vectors, meta, "batch" if batch else "single"

    async def embed_all(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        texts, batch = self._texts(data)
        options = self._text_options(data)
        rows, meta = await self._each(texts, lambda t: self.infer.embed_all(t, **options))
        return rows, meta, "batch" if batch else "single"

    async def embed_sparse(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        texts, batch = self._texts(data)
        options = self._text_options(data)
        rows, meta = await self._each(texts, lambda t: self.infer.embed_sparse(t, **options))
        body = [[{"index": i, "value": v} for i, v in row] for row in rows]
        return body, meta, "batch" if batch else "single"

    async def predict(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        value = data.get("inputs")
        if isinstance(value, str):
            items, batch = [[value]], False
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            items, batch = [list(value)], False
        elif isinstance(value, list) and all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in value
        ):
            items, batch = [list(v) for v in value], True
        else:
            raise shape_error("inputs: data did not match any variant of untagged enum Inputs")
        if batch and not items:
            raise EngineError(ErrorType.EMPTY, "`inputs` cannot be empty")
        for item in items:
            if len(item) not in (1, 2):
                raise EngineError(
                    ErrorType.VALIDATION,
                    f"`inputs` must have a single or two elements. Given: {len(item)}",
                )
        truncate, left = self._truncate(data), direction_left(data)
        raw = get(data, "raw_scores", bool, False)
        rows, meta = await self._each(
            items,
            lambda item: self.infer.predict(item, truncate=truncate, left=left, raw_scores=raw),
        )
        body = [[{"score": s, "label": label} for label, s in row] for row in rows]
        return (body if batch else body[0]), meta, "batch" if batch else "single"

    async def rerank(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        query = get(data, "query", str, REQUIRED)
        texts = get(data, "texts", list, REQUIRED)
        if not all(isinstance(t, str) for t in texts):
            raise shape_error("texts: invalid type, expected a string")
        model_type = self.infer.backend.model_type
        if model_type is not ModelType.RERANKER:
            kind = "re-ranker" if model_type is ModelType.CLASSIFIER else "classifier"
            raise EngineError(
                ErrorType.BACKEND, f"Backend error: model is not a {kind} model", "model_type"
            )
        if not texts:
            raise EngineError(ErrorType.EMPTY, "`texts` cannot be empty")
        truncate, left = self._truncate(data), direction_left(data)
        raw = get(data, "raw_scores", bool, False)
        return_text = get(data, "return_text", bool, False)
        scores, meta = await self._each(
            texts,
            lambda text: self.infer.rerank_one(
                query, text, truncate=truncate, left=left, raw_scores=raw
            ),
        )
        ranks = []
        for index, score in enumerate(scores):
            rank: dict[str, Any] = {"index": index, "score": score}
            if return_text:
                rank = {"index": index, "text": texts[index], "score": score}
            ranks.append(rank)
        ranks.sort(key=lambda r: -r["score"])
        return ranks, meta, "batch"

    async def similarity(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        inputs = get(data, "inputs", dict, REQUIRED)
        source = get(inputs, "source_sentence", str, REQUIRED)
        sentences = get(inputs, "sentences", list, REQUIRED)
        if not all(isinstance(s, str) for s in sentences):
            raise shape_error("sentences: invalid type, expected a string")
        if not sentences:
            raise EngineError(ErrorType.EMPTY, "`inputs` cannot be empty")
        params = get(data, "parameters", dict, {})
        truncate, left = self._truncate(params), direction_left(params)
        prompt = get(params, "prompt_name", str, None)
        vectors, meta = await self._each(
            [source, *sentences],
            lambda t: self.infer.embed(t, truncate=truncate, left=left, prompt_name=prompt),
        )
        head = vectors[0]
        scores = [sum(a * b for a, b in zip(head, v, strict=True)) for v in vectors[1:]]
        return scores, meta, "batch"

    async def tokenize(self, data: dict[str, Any]) -> tuple[Any, None, str]:
        value = get(data, "inputs", (str, list), REQUIRED)
        texts = [value] if isinstance(value, str) else value
        if not all(isinstance(t, str) for t in texts):
            raise shape_error("inputs: expected a string or a sequence of strings")
        special = get(data, "add_special_tokens", bool, True)
        prompt = get(data, "prompt_name", str, None)
        self.infer.check_batch(len(texts))
        body = [
            [
                {"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
                for t in self.infer.tokenize(text, add_special_tokens=special, prompt_name=prompt)
            ]
            for text in texts
        ]
        return body, None, "single"

    async def decode(self, data: dict[str, Any]) -> tuple[Any, None, str]:
        ids = get(data, "ids", list, REQUIRED)
        batch = [ids] if all(is_token_id(i) for i in ids) else ids
        if not all(isinstance(b, list) and all(is_token_id(i) for i in b) for b in batch):
            raise shape_error("ids: expected a sequence of integers")
        skip = get(data, "skip_special_tokens", bool, True)
        self.infer.check_batch(len(batch))
        return [self.infer.decode(b, skip_special_tokens=skip) for b in batch], None, "single"

    async def openai(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        value = data.get("input")
        if value is None:
            raise shape_error("missing field `input`")
        texts, batch = inputs_of(value)
        encoding = get(data, "encoding_format", str, "float")
        if encoding not in {"float", "base64"}:
            raise shape_error(f"encoding_format: unknown variant `{encoding}`")
        dimensions = get(data, "dimensions", int, None)
        vectors, meta = await self._each(
            texts,
            lambda t: self.infer.embed(t, truncate=self.args.auto_truncate, dimensions=dimensions),
        )
        items = []
        for index, vector in enumerate(vectors):
            embedding: Any = vector
            if encoding == "base64":
                raw = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(raw).decode()
            items.append({"object": "embedding", "embedding": embedding, "index": index})
        body = {
            "object": "list",
            "data": items,
            "model": self.served_name(),
            "usage": {"prompt_tokens": meta.compute_tokens, "total_tokens": meta.compute_tokens},
        }
        return body, meta, "batch" if batch else "single"

    async def vertex(self, data: dict[str, Any]) -> tuple[Any, Meta, str]:
        """Vertex AI's envelope: each instance is a rerank request, or else the model's route."""
        instances = get(data, "instances", list, REQUIRED)
        if not all(isinstance(i, dict) for i in instances):
            raise shape_error("instances: expected a sequence of objects")
        self.infer.check_batch(len(instances))
        predictions, metas = [], []
        for instance in instances:
            if "query" in instance and "texts" in instance:
                body, meta, _ = await self.rerank(instance)
            else:
                body, meta, _ = await self.default_route()(instance)
            predictions.append(body)
            metas.append(meta)
        return {"predictions": predictions}, average(metas), "batch"

    def default_route(self) -> Callable[[dict[str, Any]], Awaitable[tuple[Any, Meta, str]]]:
        """What `POST /` and `/invocations` mean for this model (TEI's SageMaker aliases)."""
        backend = self.infer.backend
        if backend.model_type is ModelType.CLASSIFIER:
            return self.predict
        if backend.model_type is ModelType.RERANKER:
            return self.rerank
        return self.embed_sparse if backend.pooling == "splade" else self.embed

    def served_name(self) -> str:
        name: str = self.args.served_model_name or self.args.model_id
        return name
