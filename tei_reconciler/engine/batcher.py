"""Dynamic batching: concurrent requests share one forward pass, like TEI's queue.

Requests of the same kind queue up; one task takes the head and as many followers as fit in
`max_batch_tokens` (and `max_batch_requests`), runs the backend once and hands each caller its
row. A blocking backend runs in a worker thread so the event loop keeps accepting requests.
With batching off (benchmarks), each request runs its own forward pass as soon as it arrives.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from tei_reconciler.engine.metrics import Metrics
from tei_reconciler.engine.types import Encoded, EngineError, ErrorType

Run = Callable[[Sequence[Encoded]], list[Any]]


@dataclass(slots=True)
class _Job:
    kind: str
    run: Run
    encoded: Encoded
    queued_ns: int
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: EngineError | None = None
    queue_ns: int = 0
    inference_ns: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    value: Any
    queue_ns: int
    inference_ns: int


class Batcher:
    """`await submit(kind, run, encoded)` returns this input's row of `run(batch)`."""

    def __init__(
        self,
        *,
        blocking: bool,
        max_batch_tokens: int,
        max_batch_requests: int | None,
        enabled: bool,
        metrics: Metrics,
    ) -> None:
        self._blocking = blocking
        self._max_tokens = max_batch_tokens
        self._max_requests = max_batch_requests or 1 << 30
        self._enabled = enabled
        self._metrics = metrics
        self._queue: deque[_Job] = deque()
        self._wakeup = anyio.Event()
        self._lock = anyio.Lock()

    async def submit(self, kind: str, run: Run, encoded: Encoded) -> Outcome:
        job = _Job(kind, run, encoded, time.perf_counter_ns())
        if self._enabled:
            self._queue.append(job)
            self._metrics.set_gauge("te_queue_size", len(self._queue))
            self._wakeup.set()
            await job.done.wait()
        else:
            await self._execute([job])
        if job.error is not None:
            raise job.error
        return Outcome(job.result, job.queue_ns, job.inference_ns)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Form and run batches until cancelled."""
        task_status.started()
        while True:
            if not self._queue:
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            batch = self._next_batch()
            self._metrics.set_gauge("te_queue_size", len(self._queue))
            await self._execute(batch)

    def _next_batch(self) -> list[_Job]:
        head = self._queue.popleft()
        batch, tokens = [head], len(head.encoded.ids)
        while self._queue and len(batch) < self._max_requests:
            job = self._queue[0]
            if job.kind != head.kind or tokens + len(job.encoded.ids) > self._max_tokens:
                break
            self._queue.popleft()
            batch.append(job)
            tokens += len(job.encoded.ids)
        return batch

    async def _execute(self, batch: list[_Job]) -> None:
        start = time.perf_counter_ns()
        inputs = [job.encoded for job in batch]
        self._metrics.observe("te_batch_next_size", len(batch))
        self._metrics.observe("te_batch_next_tokens", sum(len(e.ids) for e in inputs))
        error: EngineError | None
        try:
            if self._blocking:
                rows = await anyio.to_thread.run_sync(batch[0].run, inputs)
            else:
                rows = batch[0].run(inputs)
        except Exception as exc:
            error = EngineError(
                ErrorType.BACKEND, f"Backend error: Inference error: {exc}", metric="inference"
            )
            rows = [None] * len(batch)
        else:
            error = None
        end = time.perf_counter_ns()
        for job, row in zip(batch, rows, strict=True):
            job.result, job.error = row, error
            job.queue_ns, job.inference_ns = start - job.queued_ns, end - start
            job.done.set()
