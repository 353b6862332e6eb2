"""Desired state: what the user asked for, as frozen msgspec Structs.

This is the contract between every part of the reconciler. The state file (statefile.py)
decodes into these Structs once, at the edge; the planner, process driver, API and router only
ever see validated values. What each instance field means to TEI and to the manager is said
once, in `fields.py`; the rule of each kind of value in `rules.py`; a whole file is checked in
`check.py`. The module is pure: no I/O, no clock, no event loop.
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import datetime
from functools import cache
from typing import Any, Literal

import msgspec

#: Environment names the reconciler owns in a child's environment; `env` may not set them.
MARKER_OWNER = "TEI_RECONCILER_OWNER"
MARKER_INSTANCE = "TEI_RECONCILER_INSTANCE"
MARKER_SPEC_HASH = "TEI_RECONCILER_SPEC_HASH"
MARKER_PROCESS = "TEI_RECONCILER_PROCESS"  # one token per spawned process, for its whole family
MANAGED_ENV = frozenset(
    {"CUDA_VISIBLE_DEVICES", MARKER_OWNER, MARKER_INSTANCE, MARKER_SPEC_HASH, MARKER_PROCESS}
)


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
    LAST_TOKEN = "last-token"  # noqa: S105 (a pooling mode, not a secret)


class Rollout(enum.StrEnum):
    """The `rollout` field: how a running instance moves to a changed spec."""

    SURGE = "surge"  # the new process starts beside the old one; traffic switches once Ready
    RECREATE = "recreate"  # the old process stops first, then the new one starts


class Dtype(enum.StrEnum):
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


#: `gpu`: one index, several indexes, every visible GPU, or CPU only.
GpuSpec = int | tuple[int, ...] | Literal["all", "none"]


class InstanceSpec(Base, frozen=True):
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
    api_key_file: str | None = None
    startup_timeout_secs: float | None = None
    health_interval_secs: float | None = None
    health_timeout_secs: float | None = None
    failure_threshold: int | None = None
    restarted_at: datetime | None = None
    rollout: Rollout = Rollout.SURGE
    progress_deadline_secs: float | None = None  # unset: the startup timeout


class ModelSpec(Base, frozen=True):
    """One `[models."<id>"]` table: the revision to fetch (the default of instances on the
    model that set none) and whether to keep it on disk while no instance uses it."""

    model_id: str
    revision: str | None = None
    keep: bool = False


class DesiredState(Base, frozen=True):
    """A whole, valid state file. `revision` is the sha256 of the file's bytes (the ETag).
    `models` are the declared `[models."<id>"]` tables (checked in desired/models.py)."""

    instances: dict[str, InstanceSpec] = msgspec.field(default_factory=dict)
    revision: str = ""
    models: dict[str, ModelSpec] = msgspec.field(default_factory=dict)


#: An instance name: a DNS-1123 label. The REST API's OpenAPI document publishes the pattern.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
NAME_MAX = 63
#: What `is_instance_name` asks of a name, as problem messages say it.
NAME_RULE = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a "
    f"letter or digit, at most {NAME_MAX} characters"
)


def is_instance_name(name: str) -> bool:
    """DNS-1123 label: also what keeps names safe as file names and URL segments."""
    return len(name) <= NAME_MAX and _NAME.fullmatch(name) is not None


#: Fields whose change does not need a new process: `state` is acted on by the planner itself,
#: `rollout` and `progress_deadline_secs` say how a change is rolled out, not what runs.
_NOT_HASHED = frozenset({"state", "rollout", "progress_deadline_secs"})

#: The fields that existed when the hash was introduced. They are hashed always, at their
#: defaults too, exactly as then: a process started by an older reconciler keeps its hash and
#: is adopted after an upgrade, not replaced. A field added since is hashed only when it
#: differs from its default, so adding a defaulted field changes no running instance's hash.
#: Never edit this set.
_HASHED_SINCE_FIRST = frozenset(
    {
        "name",
        "model_id",
        "revision",
        "gpu",
        "port",
        "prometheus_port",
        "max_batch_tokens",
        "max_concurrent_requests",
        "max_client_batch_size",
        "max_batch_requests",
        "pooling",
        "dtype",
        "auto_truncate",
        "served_model_name",
        "tokenization_workers",
        "extra_args",
        "env",
        "startup_timeout_secs",
        "health_interval_secs",
        "health_timeout_secs",
        "failure_threshold",
        "restarted_at",
    }
)


@cache
def _defaults(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """Each defaulted field of `struct` and its default value."""
    defaults: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct):
        if field.default is not msgspec.NODEFAULT:
            defaults[field.name] = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            defaults[field.name] = field.default_factory()
    return defaults


def spec_hash(spec: InstanceSpec) -> str:
    """A stable digest of everything that shapes the running process (and `restarted_at`).

    Stored in the child's environment as a marker: an adopted process whose hash differs from
    the desired spec is replaced. Any field change, `restarted_at` included, changes the hash.
    """
    defaults = _defaults(type(spec))
    fields = {}
    for name in spec.__struct_fields__:
        value = getattr(spec, name)
        if name in _NOT_HASHED:
            continue
        if name in _HASHED_SINCE_FIRST or name not in defaults or value != defaults[name]:
            fields[name] = value
    encoded = msgspec.json.encode(fields, order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]
