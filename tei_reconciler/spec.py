"""Desired state: what the user asked for, as frozen msgspec Structs.

This is the contract between every part of the reconciler. The state file (statefile.py)
decodes into these Structs once, at the edge; the planner, process driver, API and router only
ever see validated values. The module is pure: no I/O, no clock, no event loop.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from typing import Literal

import msgspec

#: Flags the reconciler passes itself; `extra_args` may not repeat them.
MANAGED_FLAGS = frozenset(
    {
        "--model-id",
        "--revision",
        "--port",
        "-p",
        "--hostname",
        "--prometheus-port",
        "--max-batch-tokens",
        "--max-concurrent-requests",
        "--max-client-batch-size",
        "--max-batch-requests",
        "--pooling",
        "--dtype",
        "--auto-truncate",
        "--served-model-name",
        "--tokenization-workers",
        "--json-output",
    }
)

#: Environment names the reconciler owns in a child's environment; `env` may not set them.
MARKER_OWNER = "TEI_RECONCILER_OWNER"
MARKER_INSTANCE = "TEI_RECONCILER_INSTANCE"
MARKER_SPEC_HASH = "TEI_RECONCILER_SPEC_HASH"
MANAGED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", MARKER_OWNER, MARKER_INSTANCE, MARKER_SPEC_HASH})


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every desired-state Struct: immutable (safe to share between tasks), keyword-only
    (field order never matters to callers), and strict (a typo is an error, not a default)."""


class DesiredRun(enum.StrEnum):
    """The `state` field: whether the user wants the instance's process to exist."""

    RUNNING = "running"  # keep a process up, restart it when it dies
    STOPPED = "stopped"  # no process; never restarted automatically


class Pooling(enum.StrEnum):
    CLS = "cls"
    MEAN = "mean"
    SPLADE = "splade"
    LAST_TOKEN = "last-token"


class Dtype(enum.StrEnum):
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


#: `gpu`: one index, several indexes, every visible GPU, or CPU only.
GpuSpec = int | tuple[int, ...] | Literal["all", "none"]


class InstanceSpec(Base):
    """One TEI instance as the user wants it (a `[instances.<name>]` table merged over
    `[defaults]`). Optional probe fields left unset take the manager's defaults."""

    name: str
    model_id: str
    revision: str | None = None
    state: DesiredRun = DesiredRun.RUNNING
    gpu: GpuSpec = "all"
    port: int | None = None
    prometheus_port: int | None = None
    max_batch_tokens: int = 16384
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    max_batch_requests: int | None = None
    pooling: Pooling | None = None
    dtype: Dtype | None = None
    auto_truncate: bool | None = None
    served_model_name: str | None = None
    tokenization_workers: int | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    startup_timeout_secs: float | None = None
    health_interval_secs: float | None = None
    health_timeout_secs: float | None = None
    failure_threshold: int | None = None
    restarted_at: datetime | None = None


class DesiredState(Base):
    """A whole, valid state file. `revision` is the sha256 of the file's bytes (the ETag)."""

    instances: dict[str, InstanceSpec] = msgspec.field(default_factory=dict)
    revision: str = ""


#: Fields whose change does not need a new process: `state` is acted on by the planner itself.
_NOT_HASHED = frozenset({"state"})


def spec_hash(spec: InstanceSpec) -> str:
    """A stable digest of everything that shapes the running process (and `restarted_at`).

    Stored in the child's environment as a marker: an adopted process whose hash differs from
    the desired spec is replaced. Any field change, `restarted_at` included, changes the hash.
    """
    fields = {
        f: getattr(spec, f) for f in spec.__struct_fields__ if f not in _NOT_HASHED
    }
    encoded = msgspec.json.encode(fields, order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]
