"""TEI's core semantics, shared by the gRPC and HTTP front ends.

One `Infer` owns the backend, the `max_concurrent_requests` permits, the batcher, the metrics
and the per-request metadata (characters, tokens, and tokenization/queue/inference times).
Front ends translate wire messages to these calls and `EngineError`s to their status codes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from tei_reconciler.engine.batcher import Batcher, Run
from tei_reconciler.engine.faults import Faults
from tei_reconciler.engine.metrics import Metrics
from tei_reconciler.engine.types import (
    Backend,
    Encoded,
    EngineError,
    ErrorType,
    ModelType,
    Text,
    Token,
    backend_error,
    validation_error,
)

#: A kind of request: the batcher batches each kind apart, and it names the backend's method.
Kind = Literal["embed", "embed_all", "embed_sparse", "predict"]


@dataclass(frozen=True, slots=True)
class Meta:
    """TEI's `Metadata` message, per input."""

    compute_chars: int
    compute_tokens: int
    total_time_ns: int
    tokenization_time_ns: int
    queue_time_ns: int
    inference_time_ns: int


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent_requests: int = 512
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    max_client_batch_size: int = 32
    auto_truncate: bool = True


def activate(scores: Sequence[float], raw: bool) -> list[float]:
    """Softmax for several classes, sigmoid for one; identity for raw scores."""
    if raw:
        return list(scores)
    if len(scores) == 1:
        return [1.0 / (1.0 + math.exp(-scores[0]))]
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


class Infer:
    def __init__(
        self,
        backend: Backend,
        limits: Limits,
        *,
        metrics: Metrics,
        faults: Faults,
        dynamic_batching: bool = True,
        prompts: dict[str, str] | None = None,
        default_prompt: str | None = None,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.metrics = metrics
        self._faults = faults
        self._prompts = prompts or {}
        self._default_prompt = default_prompt
        self._on_request = on_request
        self._permits = anyio.Semaphore(limits.max_concurrent_requests)
        self.batcher = Batcher(
            blocking=backend.blocking,
            max_batch_tokens=limits.max_batch_tokens,
            max_batch_requests=limits.max_batch_requests,
            enabled=dynamic_batching,
            metrics=metrics,
        )

    # -- permits -------------------------------------------------------------------------

    @contextmanager
    def try_permits(self, count: int = 1) -> Iterator[None]:
        """TEI's `try_acquire_permit`: fail at once with "Model is overloaded"."""
        taken = 0
        try:
            for _ in range(count):
                try:
                    self._permits.acquire_nowait()
                except anyio.WouldBlock:
                    raise EngineError(
                        ErrorType.OVERLOADED, "Model is overloaded", metric="overloaded"
                    ) from None
                taken += 1
            yield
        finally:
            for _ in range(taken):
                self._permits.release()

    @asynccontextmanager
    async def permit(self) -> Any:
        """TEI's `acquire_permit`: streams wait for a free slot."""
        async with self._permits:
            yield

    # -- validation ----------------------------------------------------------------------

    def check_batch(self, size: int) -> None:
        limit = self.limits.max_client_batch_size
        if size > limit:
            raise EngineError(
                ErrorType.VALIDATION,
                f"batch size {size} > maximum allowed batch size {limit}",
                metric="batch_size",
            )

    def _prompt(self, prompt_name: str | None) -> str:
        if prompt_name is None:
            return self._default_prompt or ""
        if not self._prompts:
            raise validation_error(
                f"`prompt_name` is set to `{prompt_name}` but the model has no Sentence "
                "Transformers prompts"
            )
        if prompt_name not in self._prompts:
            names = ", ".join(f'"{n}"' for n in self._prompts)
            raise validation_error(
                f"`default-prompt-name` is set to `{prompt_name}` but it was not found in the "
                f"Sentence Transformers prompts. Available prompts: [{names}]"
            )
        return self._prompts[prompt_name]

    def _encode(
        self, text: Text, pair: str | None, truncate: bool, left: bool, prompt_name: str | None
    ) -> Encoded:
        if not text:
            raise EngineError(ErrorType.EMPTY, "Input validation error: `inputs` cannot be empty")
        if isinstance(text, tuple):
            return self._ids(text, truncate=truncate, left=left)
        limit = self.backend.max_input_length * 250
        if not truncate and len(text) + len(pair or "") > limit:
            raise validation_error(f"`inputs` must have less than {limit} characters")
        text = self._prompt(prompt_name) + text
        encoded = self.backend.encode(text, pair, truncate=truncate, left=left)
        self.metrics.observe("te_request_input_length", len(encoded.ids))
        return encoded

    def _ids(self, ids: tuple[int, ...], *, truncate: bool, left: bool) -> Encoded:
        """Token ids are used as given: no special tokens, no prompt; only the length rule."""
        limit = self.backend.max_input_length
        if len(ids) > limit:
            if not truncate:
                raise validation_error(
                    f"`inputs` must have less than {limit} tokens. Given: {len(ids)}"
                )
            ids = ids[-limit:] if left else ids[:limit]
        self.metrics.observe("te_request_input_length", len(ids))
        return Encoded(ids=ids, chars=0, type_ids=(0,) * len(ids))

    def _require(self, model_type: ModelType, message: str) -> None:
        if self.backend.model_type is not model_type:
            raise backend_error(message)

    # -- operations ----------------------------------------------------------------------

    async def _run(
        self,
        kind: Kind,
        text: Text,
        pair: str | None = None,
        *,
        truncate: bool,
        left: bool,
        prompt_name: str | None = None,
    ) -> tuple[Any, Meta]:
        """One input through the batcher to the backend's method `kind`, with TEI's metrics
        and metadata."""
        start = time.perf_counter_ns()
        family = "te_predict" if kind == "predict" else "te_embed"
        self.metrics.inc(f"{family}_count")
        encoded = self._encode(text, pair, truncate, left, prompt_name)
        tokenized = time.perf_counter_ns()
        run: Run = getattr(self.backend, kind)
        outcome = await self.batcher.submit(kind, run, encoded)
        if self._faults.slow_ms:
            await anyio.sleep(self._faults.slow_ms / 1000)
        if self._faults.hold_until is not None:
            await _until_exists(self._faults.hold_until)
        total = time.perf_counter_ns() - start
        meta = Meta(
            compute_chars=encoded.chars,
            compute_tokens=len(encoded.ids),
            total_time_ns=total,
            tokenization_time_ns=tokenized - start,
            queue_time_ns=outcome.queue_ns,
            inference_time_ns=outcome.inference_ns,
        )
        self.metrics.inc(f"{family}_success")
        for prefix in (family, "te_request"):
            self.metrics.observe(f"{prefix}_duration", total / 1e9)
            self.metrics.observe(f"{prefix}_tokenization_duration", meta.tokenization_time_ns / 1e9)
            self.metrics.observe(f"{prefix}_queue_duration", meta.queue_time_ns / 1e9)
            self.metrics.observe(f"{prefix}_inference_duration", meta.inference_time_ns / 1e9)
        self._on_request()
        return outcome.value, meta

    async def embed(
        self,
        text: Text,
        *,
        truncate: bool,
        left: bool = False,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> tuple[list[float], Meta]:
        self._require(ModelType.EMBEDDING, "Model is not an embedding model")
        dim = self.backend.dimension
        if dimensions is not None and not 0 < dimensions <= dim:
            raise validation_error(
                f"`dimensions` must be between 1 and the model's {dim} dimensions. "
                f"Given: {dimensions}"
            )
        vector, meta = await self._run(
            "embed", text, truncate=truncate, left=left, prompt_name=prompt_name
        )
        if dimensions is not None:
            vector = vector[:dimensions]
        if normalize:
            norm = math.sqrt(sum(v * v for v in vector))
            vector = [v / max(norm, 1e-12) for v in vector]
        return vector, meta

    async def embed_all(
        self, text: Text, *, truncate: bool, left: bool = False, prompt_name: str | None = None
    ) -> tuple[list[list[float]], Meta]:
        self._require(ModelType.EMBEDDING, "Model is not an embedding model")
        result: tuple[list[list[float]], Meta] = await self._run(
            "embed_all", text, truncate=truncate, left=left, prompt_name=prompt_name
        )
        return result

    async def embed_sparse(
        self, text: Text, *, truncate: bool, left: bool = False, prompt_name: str | None = None
    ) -> tuple[list[tuple[int, float]], Meta]:
        self._require(ModelType.EMBEDDING, "Model is not an embedding model")
        if self.backend.pooling != "splade":
            raise backend_error("Model is not an embedding model with SPLADE pooling")
        result: tuple[list[tuple[int, float]], Meta] = await self._run(
            "embed_sparse", text, truncate=truncate, left=left, prompt_name=prompt_name
        )
        return result

    async def predict(
        self, inputs: Sequence[str], *, truncate: bool, left: bool = False, raw_scores: bool
    ) -> tuple[list[tuple[str, float]], Meta]:
        """Every label with its score, sorted by score, descending."""
        if self.backend.model_type is ModelType.EMBEDDING:
            raise backend_error("Model is not a classifier model")
        pair = inputs[1] if len(inputs) > 1 else None
        scores, meta = await self._run("predict", inputs[0], pair, truncate=truncate, left=left)
        labels = self.backend.id2label
        ranked = sorted(
            ((labels[i], s) for i, s in enumerate(activate(scores, raw_scores))),
            key=lambda item: -item[1],
        )
        return ranked, meta

    async def rerank_one(
        self, query: str, text: str, *, truncate: bool, left: bool, raw_scores: bool
    ) -> tuple[float, Meta]:
        scores, meta = await self._run("predict", query, text, truncate=truncate, left=left)
        return activate(scores, raw_scores)[0], meta

    def tokenize(
        self, text: str, *, add_special_tokens: bool, prompt_name: str | None = None
    ) -> list[Token]:
        return self.backend.tokenize(
            self._prompt(prompt_name) + text, add_special_tokens=add_special_tokens
        )

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool) -> str:
        if not ids:
            raise EngineError(ErrorType.EMPTY, "`ids` cannot be empty")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    async def warmup(self) -> None:
        """TEI's health check plus warm-up: one forward pass before the port opens."""
        text = "warm up " * 4
        encoded = self.backend.encode(text, None, truncate=True, left=False)
        run: Run
        if self.backend.model_type is ModelType.EMBEDDING:
            run = self.backend.embed
        else:
            encoded = self.backend.encode(text, text, truncate=True, left=False)
            run = self.backend.predict
        if self.backend.blocking:
            await anyio.to_thread.run_sync(run, [encoded])
        else:
            run([encoded])


def tei_headers(meta: Meta) -> list[tuple[str, str]]:
    """TEI's `x-*` response headers; times in integer milliseconds."""
    total = str(meta.total_time_ns // 1_000_000)
    return [
        ("x-compute-type", "gpu+optimized"),
        ("x-compute-time", total),
        ("x-compute-characters", str(meta.compute_chars)),
        ("x-compute-tokens", str(meta.compute_tokens)),
        ("x-total-time", total),
        ("x-tokenization-time", str(meta.tokenization_time_ns // 1_000_000)),
        ("x-queue-time", str(meta.queue_time_ns // 1_000_000)),
        ("x-inference-time", str(meta.inference_time_ns // 1_000_000)),
    ]


def average(metas: Sequence[Meta]) -> Meta:
    """TEI's batch metadata: characters and tokens summed, times averaged (total kept)."""
    n = max(len(metas), 1)
    return Meta(
        compute_chars=sum(m.compute_chars for m in metas),
        compute_tokens=sum(m.compute_tokens for m in metas),
        total_time_ns=max((m.total_time_ns for m in metas), default=0),
        tokenization_time_ns=sum(m.tokenization_time_ns for m in metas) // n,
        queue_time_ns=sum(m.queue_time_ns for m in metas) // n,
        inference_time_ns=sum(m.inference_time_ns for m in metas) // n,
    )


async def _until_exists(path: str) -> None:
    """The `hold_until` fault: poll for the file the test creates to release the request."""
    while not await anyio.Path(path).exists():  # noqa: ASYNC110 (another process creates it)
        await anyio.sleep(0.02)
