"""The checks before an instance starts: can the binary serve its model, and will it fit?

This replaces tei-manager's "load" smoke test (a throwaway TEI launched on a fixed port and
watched for log lines): the answer comes from the model's own files, in milliseconds, before
any process exists. With the built-in engine as the binary, its own layout reader decides
(the one the engine runs at start, so the answer is the engine's); with TEI, its list of
supported model types (`support.py`). A refusal fails the start with the reason (phase
Failed, retried slowly and at once on a spec change); a GPU too small is only a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.engine.layout import resolve
from tei_reconciler.engine.types import StartupError
from tei_reconciler.models.support import memory_warning, tei_refusal
from tei_reconciler.planner.model_status import ModelFacts


@dataclass(frozen=True, slots=True)
class Verdict:
    refusal: str | None = None  # the binary cannot serve the model: do not start
    warning: str | None = None  # it can, but the weights may not fit in GPU memory


def check_start(
    spec: InstanceSpec,
    *,
    builtin: bool,
    cache: Path,
    facts: ModelFacts | None,
    cuda: str,
    free_memory: Callable[[int], int | None],
) -> Verdict:
    """The verdict for starting `spec` with `cuda` as its CUDA_VISIBLE_DEVICES."""
    if spec.model_id.startswith("hash/") and builtin:
        return Verdict()
    if builtin:
        try:
            resolve(
                spec.model_id,
                revision=spec.revision,
                cache_flag=str(cache),
                pooling=str(spec.pooling) if spec.pooling is not None else None,
            )
        except StartupError as exc:
            return Verdict(refusal=f"the built-in engine cannot serve it: {exc}")
        return Verdict()
    gpus = [int(g) for g in cuda.split(",") if g.strip()]
    if facts is None:
        return Verdict()
    refusal = tei_refusal(facts, on_gpu=bool(gpus))
    if refusal is not None or not gpus:
        return Verdict(refusal=refusal)
    free = free_memory(gpus[0])
    if free is None:
        return Verdict()
    dtype = str(spec.dtype) if spec.dtype is not None else None
    return Verdict(warning=memory_warning(facts, dtype=dtype, gpu=gpus[0], free_bytes=free))
