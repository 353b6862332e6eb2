"""Model status records: what the model registry knows of each model, as immutable Structs.

Pure, like the instance status records: the registry writes them to the status store, the
REST API and the CLI read them, and the planner sees only `ModelGate`, the one fact it needs
("this instance's model is not on disk yet, or cannot be fetched").
"""

from __future__ import annotations

import enum

import msgspec

#: The check before an instance starts (models/checks.py) speaks through these two reasons: the
#: instance's reason when its binary cannot serve the model (phase Failed, nothing started), and
#: the Warning event when the weights may not fit in its GPU's free memory (it starts anyway).
UNSUPPORTED_MODEL = "UnsupportedModel"
INSUFFICIENT_GPU_MEMORY = "InsufficientGPUMemory"


class ModelState(enum.StrEnum):
    """tei-manager's model statuses, those that still mean something here."""

    AVAILABLE = "available"  # wanted or known, not on disk, no fetch running
    DOWNLOADING = "downloading"  # a fetch is running
    DOWNLOADED = "downloaded"  # complete on disk (in the cache, or a local directory)
    FAILED = "failed"  # the last fetch failed; retried with backoff


class ModelFacts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a model is, from `config.json` and safetensors headers (tei-manager's `metadata`
    plus the parameter count, dtype and sizes the checks before start need)."""

    model_type: str | None = None
    architecture: str | None = None
    hidden_size: int | None = None
    max_position_embeddings: int | None = None
    vocab_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    parameters: int | None = None
    parameters_estimated: bool = False
    dtype: str | None = None
    weights_bytes: int | None = None  # bytes of the weight files on disk
    size_bytes: int | None = None  # bytes of the whole snapshot on disk


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """A running fetch: bytes and files done of the total."""

    done_bytes: int
    total_bytes: int
    files_done: int
    files_total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0

    def describe(self) -> str:
        """`"12.3 MiB of 90.9 MiB (13%), 2 of 7 files"`."""
        return (
            f"{_size(self.done_bytes)} of {_size(self.total_bytes)} ({self.percent:.0f}%), "
            f"{self.files_done} of {self.files_total} files"
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Everything known about one model: wanted (declared or used), cached, or both."""

    model_id: str
    state: ModelState
    revision: str | None = None  # the wanted branch, tag or commit (None: main)
    commit: str | None = None  # the commit on disk
    local: bool = False  # model_id is a local directory: inspected, never fetched
    declared: bool = False  # a [models."..."] table names it
    keep: bool = False  # kept on disk with no instance using it
    used_by: tuple[str, ...] = ()  # instances whose model_id it is
    cache_path: str | None = None  # the snapshot directory (or the local directory)
    cache_size_bytes: int | None = None  # the model's whole cache folder on disk
    metadata: ModelFacts | None = None
    progress: Progress | None = None
    reason: str = ""  # why it is in its state (Downloading, RepoNotFound, DiskFull, ...)
    message: str = ""
    retry_at: float | None = None  # epoch seconds of the next fetch attempt after a failure
    failures: int = 0  # failed fetches in a row
    added_at: float | None = None  # epoch seconds it was first wanted or seen
    updated_at: float | None = None


class ModelGate(msgspec.Struct, frozen=True, kw_only=True):
    """Why an instance may not start yet: its model is still downloading, or cannot be
    fetched. The planner holds the start back and shows this as the instance's reason."""

    reason: str  # "Downloading" (Pending) or the fetch failure (Failed)
    message: str
    failed: bool = False


class ModelChange(msgspec.Struct, frozen=True, kw_only=True):
    """A notification to subscribers: `status` is None when the model was forgotten."""

    model_id: str
    status: ModelStatus | None
