"""The five `tei.v1` services of TEI's gRPC build, as thin translations onto `Infer`.

Every service is always registered; one that does not fit the model answers
FAILED_PRECONDITION, as TEI does. Unary calls return TEI's `x-*` headers as initial metadata.
Bidi streams process their messages concurrently and answer in request order; the first
failed message ends the call with its status.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import grpc

from tei_reconciler.engine.infer import Infer, Meta, average, tei_headers
from tei_reconciler.engine.types import EngineError, ErrorType, ModelType
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

LEFT = tei_pb2.TRUNCATION_DIRECTION_LEFT
#: TEI's bound on the messages of one stream that are queued but not yet answered.
_MAX_PARALLEL_STREAM_REQUESTS = int(os.environ.get("GRPC_MAX_PARALLEL_STREAM_REQUESTS", "1024"))


def meta_pb(meta: Meta) -> tei_pb2.Metadata:
    return tei_pb2.Metadata(
        compute_chars=meta.compute_chars,
        compute_tokens=meta.compute_tokens,
        total_time_ns=meta.total_time_ns,
        tokenization_time_ns=meta.tokenization_time_ns,
        queue_time_ns=meta.queue_time_ns,
        inference_time_ns=meta.inference_time_ns,
    )


async def _abort(context: grpc.aio.ServicerContext, error: EngineError) -> None:
    await context.abort(grpc.StatusCode[error.kind.grpc_code_name], error.message)


@dataclass(slots=True)
class _Slot:
    done: anyio.Event = field(default_factory=anyio.Event)
    response: Any = None
    error: EngineError | None = None


class _Frontend:
    def __init__(self, infer: Infer) -> None:
        self.infer = infer

    async def unary(
        self,
        context: grpc.aio.ServicerContext,
        work: Callable[[], Awaitable[tuple[Any, Meta]]],
        *,
        permits: bool = True,
    ) -> Any:
        """Run one request as TEI's unary handlers do: permit, metrics, x-* metadata."""
        metrics = self.infer.metrics
        metrics.inc("te_request_count", method="single")
        try:
            if permits:
                with self.infer.try_permits():
                    response, meta = await work()
            else:
                response, meta = await work()
        except EngineError as error:
            metrics.inc("te_request_failure", err=error.metric)
            await _abort(context, error)
            raise AssertionError("abort raises") from error
        metrics.inc("te_request_success", method="single")
        await context.send_initial_metadata(tei_headers(meta))
        return response

    async def bidi(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        handle: Callable[[Any], Awaitable[Any]],
    ) -> None:
        """Concurrent processing, in-order answers; each message waits for a permit."""
        send, receive = anyio.create_memory_object_stream[_Slot](
            max_buffer_size=_MAX_PARALLEL_STREAM_REQUESTS
        )
        failure: EngineError | None = None

        async def process(request: Any, slot: _Slot) -> None:
            try:
                async with self.infer.permit():
                    slot.response = await handle(request)
            except EngineError as error:
                slot.error = error
            finally:
                slot.done.set()

        async def read(tg: anyio.abc.TaskGroup) -> None:
            async with send:
                async for request in requests:
                    slot = _Slot()
                    await send.send(slot)
                    tg.start_soon(process, request, slot)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, tg)
            async with receive:
                async for slot in receive:
                    await slot.done.wait()
                    if slot.error is not None:
                        failure = slot.error
                        tg.cancel_scope.cancel()
                        break
                    await context.write(slot.response)
        if failure is not None:
            await _abort(context, failure)


class InfoService(tei_pb2_grpc.InfoServicer):
    def __init__(self, info: tei_pb2.InfoResponse) -> None:
        self._info = info

    async def Info(self, request: Any, context: Any) -> tei_pb2.InfoResponse:
        return self._info


def _text_options(r: Any) -> dict[str, Any]:
    """How an embed request's text is prepared: truncation, its side, the prompt."""
    return {
        "truncate": r.truncate,
        "left": r.truncation_direction == LEFT,
        "prompt_name": r.prompt_name if r.HasField("prompt_name") else None,
    }


class EmbedService(tei_pb2_grpc.EmbedServicer, _Frontend):
    async def _embed(self, r: Any) -> tuple[tei_pb2.EmbedResponse, Meta]:
        vector, meta = await self.infer.embed(
            r.inputs,
            normalize=r.normalize if r.HasField("normalize") else True,
            dimensions=r.dimensions if r.HasField("dimensions") else None,
            **_text_options(r),
        )
        return tei_pb2.EmbedResponse(embeddings=vector, metadata=meta_pb(meta)), meta

    async def _sparse(self, r: Any) -> tuple[tei_pb2.EmbedSparseResponse, Meta]:
        values, meta = await self.infer.embed_sparse(r.inputs, **_text_options(r))
        sparse = [tei_pb2.SparseValue(index=i, value=v) for i, v in values]
        return tei_pb2.EmbedSparseResponse(sparse_embeddings=sparse, metadata=meta_pb(meta)), meta

    async def _all(self, r: Any) -> tuple[tei_pb2.EmbedAllResponse, Meta]:
        tokens, meta = await self.infer.embed_all(r.inputs, **_text_options(r))
        rows = [tei_pb2.TokenEmbedding(embeddings=t) for t in tokens]
        return tei_pb2.EmbedAllResponse(token_embeddings=rows, metadata=meta_pb(meta)), meta

    async def Embed(self, request: Any, context: Any) -> Any:
        return await self.unary(context, lambda: self._embed(request))

    async def EmbedSparse(self, request: Any, context: Any) -> Any:
        return await self.unary(context, lambda: self._sparse(request))

    async def EmbedAll(self, request: Any, context: Any) -> Any:
        return await self.unary(context, lambda: self._all(request))

    async def EmbedStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, lambda r: _first(self._embed(r)))

    async def EmbedSparseStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, lambda r: _first(self._sparse(r)))

    async def EmbedAllStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, lambda r: _first(self._all(r)))


async def _first(work: Awaitable[tuple[Any, Meta]]) -> Any:
    return (await work)[0]


class PredictService(tei_pb2_grpc.PredictServicer, _Frontend):
    async def _predict(self, inputs: list[str], r: Any) -> tuple[tei_pb2.PredictResponse, Meta]:
        ranked, meta = await self.infer.predict(
            inputs,
            truncate=r.truncate,
            left=r.truncation_direction == LEFT,
            raw_scores=r.raw_scores,
        )
        predictions = [tei_pb2.Prediction(score=s, label=label) for label, s in ranked]
        return tei_pb2.PredictResponse(predictions=predictions, metadata=meta_pb(meta)), meta

    async def _pair(self, r: Any) -> tuple[tei_pb2.PredictResponse, Meta]:
        if len(r.inputs) not in (1, 2):
            raise EngineError(
                ErrorType.VALIDATION,
                f"`inputs` must have a single or two elements. Given: {len(r.inputs)}",
            )
        return await self._predict(list(r.inputs), r)

    async def Predict(self, request: Any, context: Any) -> Any:
        return await self.unary(context, lambda: self._predict([request.inputs], request))

    async def PredictPair(self, request: Any, context: Any) -> Any:
        return await self.unary(context, lambda: self._pair(request))

    async def PredictStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, lambda r: _first(self._predict([r.inputs], r)))

    async def PredictPairStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, lambda r: _first(self._pair(r)))


class RerankService(tei_pb2_grpc.RerankServicer, _Frontend):
    def _check_model(self) -> None:
        model_type = self.infer.backend.model_type
        if model_type is ModelType.CLASSIFIER:
            raise EngineError(ErrorType.BACKEND, "model is not a re-ranker model", "model_type")
        if model_type is ModelType.EMBEDDING:
            raise EngineError(ErrorType.BACKEND, "model is not a classifier model", "model_type")

    async def _rank(
        self, texts: list[tuple[str, str]], first: Any
    ) -> tuple[tei_pb2.RerankResponse, Meta]:
        """`texts` pairs each text with its query; each text waits for a permit."""
        start = time.perf_counter_ns()
        results: list[tuple[float, Meta] | None] = [None] * len(texts)
        errors: list[EngineError] = []

        async def one(index: int, q: str, text: str) -> None:
            try:
                async with self.infer.permit():
                    results[index] = await self.infer.rerank_one(
                        q,
                        text,
                        truncate=first.truncate,
                        left=first.truncation_direction == LEFT,
                        raw_scores=first.raw_scores,
                    )
            except EngineError as error:
                errors.append(error)

        async with anyio.create_task_group() as tg:
            for index, (q, text) in enumerate(texts):
                tg.start_soon(one, index, q, text)
        if errors:
            raise errors[0]
        done = [r for r in results if r is not None]
        ranks = [
            tei_pb2.Rank(index=i, score=score, text=texts[i][1] if first.return_text else None)
            for i, (score, _) in enumerate(done)
        ]
        ranks.sort(key=lambda rank: -rank.score)
        meta = average([m for _, m in done])
        meta = dataclasses.replace(meta, total_time_ns=time.perf_counter_ns() - start)
        return tei_pb2.RerankResponse(ranks=ranks, metadata=meta_pb(meta)), meta

    async def _rerank(self, r: Any) -> tuple[tei_pb2.RerankResponse, Meta]:
        self._check_model()
        if not r.texts:
            raise EngineError(ErrorType.VALIDATION, "`texts` cannot be empty")
        self.infer.check_batch(len(r.texts))
        return await self._rank([(r.query, t) for t in r.texts], r)

    async def Rerank(self, request: Any, context: Any) -> Any:
        return await self.unary(context, lambda: self._rerank(request), permits=False)

    async def RerankStream(self, request_iterator: Any, context: Any) -> Any:
        messages = [message async for message in request_iterator]

        async def work() -> tuple[tei_pb2.RerankResponse, Meta]:
            self._check_model()
            if not messages:
                raise EngineError(ErrorType.VALIDATION, "`texts` cannot be empty")
            pairs = [(m.query, m.text) for m in messages]
            return await self._rank(pairs, messages[0])

        return await self.unary(context, work, permits=False)


class TokenizeService(tei_pb2_grpc.TokenizeServicer, _Frontend):
    def _encode(self, r: Any) -> tei_pb2.EncodeResponse:
        tokens = self.infer.tokenize(
            r.inputs,
            add_special_tokens=r.add_special_tokens,
            prompt_name=r.prompt_name if r.HasField("prompt_name") else None,
        )
        return tei_pb2.EncodeResponse(
            tokens=[
                tei_pb2.SimpleToken(
                    id=t.id, text=t.text, special=t.special, start=t.start, stop=t.stop
                )
                for t in tokens
            ]
        )

    def _decode(self, r: Any) -> tei_pb2.DecodeResponse:
        text = self.infer.decode(list(r.ids), skip_special_tokens=r.skip_special_tokens)
        return tei_pb2.DecodeResponse(text=text)

    async def Tokenize(self, request: Any, context: Any) -> Any:
        try:
            return self._encode(request)
        except EngineError as error:
            await _abort(context, error)

    async def Decode(self, request: Any, context: Any) -> Any:
        try:
            return self._decode(request)
        except EngineError as error:
            await _abort(context, error)

    async def TokenizeStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, _sync(self._encode))

    async def DecodeStream(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self.bidi(request_iterator, context, _sync(self._decode))


def _sync(fn: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    async def call(request: Any) -> Any:
        return fn(request)

    return call
