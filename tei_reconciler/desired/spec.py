"""Desired state: what the user asked for, as frozen msgspec Structs.

This is the contract between every part of the reconciler. The state file (statefile.py)
decodes into these Structs once, at the edge; the planner, process driver, API and router only
ever see validated values. The module is pure: no I/O, no clock, no event loop.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Literal, NamedTuple, TypeGuard

import msgspec

from tei_reconciler.errors import Problem

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
    LAST_TOKEN = "last-token"  # noqa: S105 (a pooling mode, not a secret)


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
    startup_timeout_secs: float | None = None
    health_interval_secs: float | None = None
    health_timeout_secs: float | None = None
    failure_threshold: int | None = None
    restarted_at: datetime | None = None


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


#: Fields whose change does not need a new process: `state` is acted on by the planner itself.
_NOT_HASHED = frozenset({"state"})


def spec_hash(spec: InstanceSpec) -> str:
    """A stable digest of everything that shapes the running process (and `restarted_at`).

    Stored in the child's environment as a marker: an adopted process whose hash differs from
    the desired spec is replaced. Any field change, `restarted_at` included, changes the hash.
    """
    fields = {f: getattr(spec, f) for f in spec.__struct_fields__ if f not in _NOT_HASHED}
    encoded = msgspec.json.encode(fields, order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]


# --- Validation -------------------------------------------------------------------------------
#
# The state file is decoded by hand rather than by `msgspec.convert` so that every problem in a
# file is reported at once, each with the exact key it is about. Problems carry a key path; the
# state file module turns key paths into line and column.

KeyPath = tuple[str, ...]

#: The keys an `[instances.<name>]` or `[defaults]` table may hold (the name is the table key).
INSTANCE_KEYS: tuple[str, ...] = tuple(f for f in InstanceSpec.__struct_fields__ if f != "name")
TOP_LEVEL_KEYS = ("defaults", "instances", "models")

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HF_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
MIN_PORT, MAX_PORT = 1024, 65535

#: What to use instead of a managed flag, shown when `extra_args` repeats one.
_FLAG_FIELD = {"-p": "port", "--hostname": "the manager's instance_host", "--json-output": ""}


class Issue(NamedTuple):
    """A problem before it is located in a file: the key path it is about, and what is wrong."""

    key: KeyPath
    message: str
    code: str = "invalid"

    def problem(self, path: str = "", line: int = 0, column: int = 0) -> Problem:
        field = ".".join(self.key)
        return Problem(
            path=path, line=line, column=column, field=field, message=self.message, code=self.code
        )


def _show(value: object) -> str:
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def suggest(key: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known key, or nothing."""
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_instance_name(name: str) -> bool:
    """DNS-1123 label: also what keeps names safe as file names and URL segments."""
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


class _Invalid(Exception):
    """A value that breaks its field's rule; the message says what the rule is."""


_INT64_MAX = 2**63 - 1  # TOML integers are 64-bit; Python's parser accepts more


def _no_nul(value: str, what: str = "") -> str:
    """A NUL cannot pass through argv or the environment: exec would refuse the child."""
    if "\0" in value:
        raise _Invalid(f"{what}may not contain a NUL character, got {_show(value)}")
    return value


def _positive_int(value: object) -> int:
    if not _is_int(value) or not 1 <= value <= _INT64_MAX:
        raise _Invalid(f"must be a positive integer, got {_show(value)}")
    return value


def _positive_number(value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _Invalid(f"must be a positive number of seconds, got {_show(value)}")
    return float(value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, got {_show(value)}")
    return _no_nul(value)


def _choice(enum_type: type[enum.StrEnum]) -> Callable[[object], object]:
    def convert(value: object) -> object:
        if isinstance(value, str):
            try:
                return enum_type(value)
            except ValueError:
                pass
        allowed = ", ".join(m.value for m in enum_type)
        raise _Invalid(f"must be one of {allowed}, got {_show(value)}")

    return convert


def _model_id(value: object) -> str:
    if isinstance(value, str) and (
        (value.startswith("/") and "\0" not in value)
        or (_HF_ID.fullmatch(value) is not None and not {".", ".."} & set(value.split("/")))
    ):
        return value
    raise _Invalid(
        f"must be a Hugging Face model id ('org/name') or an absolute path, got {_show(value)}"
    )


def _port(value: object) -> int:
    if not _is_int(value) or not MIN_PORT <= value <= MAX_PORT:
        raise _Invalid(f"must be between {MIN_PORT} and {MAX_PORT}, got {_show(value)}")
    return value


def _gpu(value: object) -> GpuSpec:
    if value in ("all", "none"):
        return "all" if value == "all" else "none"
    if _is_int(value) and value >= 0:
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(_is_int(v) and v >= 0 for v in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise _Invalid(
        'must be a GPU index (an integer >= 0), a non-empty list of distinct indexes, "all" or '
        f'"none", got {_show(value)}'
    )


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_show(value)}")
    return value


def _datetime(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise _Invalid(f"must be a TOML date-time such as 2024-05-01T12:00:00Z, got {_show(value)}")
    return value


def _extra_args(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"must be a list of strings, got {_show(value)}")
    for arg in value:
        _no_nul(arg)
        flag = arg.split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            instead = _FLAG_FIELD.get(flag, flag.lstrip("-").replace("-", "_"))
            hint = f" (set {instead} instead)" if instead else ""
            raise _Invalid(f"may not repeat {flag}: the reconciler passes it itself{hint}")
    return tuple(value)


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table of strings, got {_show(value)}")
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise _Invalid(f"{_show(key)} is not a valid environment variable name")
        if key in MANAGED_ENV:
            instead = "set gpu instead" if key == "CUDA_VISIBLE_DEVICES" else "the reconciler's"
            raise _Invalid(f"may not set {key} ({instead})")
        if not isinstance(item, str):
            raise _Invalid(f"{key} must be a string, got {_show(item)}")
        _no_nul(item, f"{key} ")
    return dict(value)


_RULES: dict[str, Callable[[object], object]] = {
    "model_id": _model_id,
    "revision": _text,
    "state": _choice(DesiredRun),
    "gpu": _gpu,
    "port": _port,
    "prometheus_port": _port,
    "max_batch_tokens": _positive_int,
    "max_concurrent_requests": _positive_int,
    "max_client_batch_size": _positive_int,
    "max_batch_requests": _positive_int,
    "pooling": _choice(Pooling),
    "dtype": _choice(Dtype),
    "auto_truncate": _bool,
    "served_model_name": _text,
    "tokenization_workers": _positive_int,
    "extra_args": _extra_args,
    "env": _env,
    "startup_timeout_secs": _positive_number,
    "health_interval_secs": _positive_number,
    "health_timeout_secs": _positive_number,
    "failure_threshold": _positive_int,
    "restarted_at": _datetime,
}


def accepts(key: str, value: object) -> bool:
    """Whether `value` passes the rule of instance field `key` on its own (property tests
    generate values through this, so they only produce what the validator accepts)."""
    rule = _RULES.get(key)
    if rule is None:
        return False
    try:
        rule(value)
    except _Invalid:
        return False
    return True


def _check_table(
    table: Mapping[str, object], where: KeyPath, issues: list[Issue]
) -> dict[str, object]:
    """Validate each key of one instance or defaults table; return the converted values."""
    values: dict[str, object] = {}
    for key, value in table.items():
        rule = _RULES.get(key)
        if rule is None:
            hint = " (the table key is the instance's name)" if key == "name" else ""
            hint = hint or suggest(key, INSTANCE_KEYS)
            issues.append(Issue((*where, key), f"unknown key {key!r}{hint}", "unknown_key"))
            continue
        try:
            values[key] = rule(value)
        except _Invalid as exc:
            issues.append(Issue((*where, key), f"{key} {exc}"))
    return values


def check_state(
    doc: Mapping[str, object], *, reserved_ports: frozenset[int] = frozenset()
) -> tuple[dict[str, InstanceSpec], list[Issue]]:
    """Validate a decoded state document (what tomllib returns) in full.

    Returns the instances (meaningful only when there are no issues) and every issue found.
    `[defaults]` is merged under each instance (`env` per variable); a problem in a default is
    reported once, at the default's own key.
    """
    issues: list[Issue] = []
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            hint = suggest(key, TOP_LEVEL_KEYS) or (
                " (instance fields go in an [instances.<name>] table)"
                if key in INSTANCE_KEYS
                else ""
            )
            issues.append(Issue((key,), f"unknown key {key!r}{hint}", "unknown_key"))
    raw_defaults = doc.get("defaults", {})
    raw_instances = doc.get("instances", {})
    defaults: dict[str, object] = {}
    if isinstance(raw_defaults, dict):
        defaults = _check_table(raw_defaults, ("defaults",), issues)
    else:
        issues.append(Issue(("defaults",), "defaults must be a table"))
    if not isinstance(raw_instances, dict):
        issues.append(Issue(("instances",), "instances must be a table of [instances.<name>]"))
        raw_instances = {}

    specs: dict[str, InstanceSpec] = {}
    ports: dict[int, KeyPath] = {}
    for name, table in raw_instances.items():
        where: KeyPath = ("instances", name)
        if not is_instance_name(name):
            issues.append(
                Issue(
                    where,
                    f"instance name {_show(name)} must be a DNS-1123 label: lowercase letters, "
                    "digits and '-', starting and ending with a letter or digit, at most 63 "
                    "characters",
                )
            )
        if not isinstance(table, dict):
            issues.append(Issue(where, f"instances.{name} must be a table"))
            continue
        own = _check_table(table, where, issues)
        values = {**defaults, **own}
        if isinstance(defaults.get("env"), dict) and isinstance(own.get("env"), dict):
            values["env"] = {**defaults["env"], **own["env"]}  # type: ignore[dict-item]
        if "model_id" not in table and "model_id" not in defaults:
            issues.append(Issue(where, "model_id is required"))
        for key in ("port", "prometheus_port"):
            port = values.get(key)
            if not _is_int(port):
                continue
            at: KeyPath = (*where, key) if key in own else ("defaults", key)
            if port in reserved_ports:
                issues.append(
                    Issue(
                        at, f"{key} {port} is the manager's own API or gRPC port", "port_conflict"
                    )
                )
            elif port in ports:
                first = ports[port]
                issues.append(
                    Issue(
                        at,
                        f"{key} {port} is already used by {'.'.join(first)}",
                        "port_conflict",
                    )
                )
            else:
                ports[port] = (*where, key)
        if "model_id" in values:
            specs[name] = InstanceSpec(name=name, **values)  # type: ignore[arg-type]
    unique = list(dict.fromkeys(issues))
    return specs, unique
