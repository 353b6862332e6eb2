"""Every request and response body of the REST API, as msgspec Structs.

The same Structs decode requests (validation once, at the edge), encode responses, and feed
`openapi.py`, so the published schema can never drift from what the handlers accept and send.

Request bodies use tei-manager's field names (`gpu_id`, `port: 0` for "pick one") so its
scripts keep working, plus the state file's own fields, taken from the field table
(`tei_reconciler.desired.fields`). They forbid unknown fields: a typo in a request is an error,
exactly as it is in the state file. Responses carry the anchor's flat instance fields first,
then the Kubernetes-style status (phase, conditions, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from tei_reconciler.desired.fields import FIELDS
from tei_reconciler.desired.spec import NAME_MAX, NAME_PATTERN, DesiredRun, InstanceSpec, Rollout
from tei_reconciler.planner.model_status import ModelFacts
from tei_reconciler.planner.phase import AnchorStatus, Phase
from tei_reconciler.routing import DataPlaneStatus

GpuIndex = Annotated[int, msgspec.Meta(ge=0)]
#: The state file's name rule, stated for the document; the state file's validator applies it
#: (with its own messages), so it is `extra_json_schema`, never enforced by msgspec here.
InstanceName = Annotated[
    str, msgspec.Meta(extra_json_schema={"pattern": NAME_PATTERN, "maxLength": NAME_MAX})
]


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: strict (a typo is a 400, not a silently ignored key)."""


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """Response bodies: every key always present (tei-manager's InstanceInfo shape)."""


# ---- requests ------------------------------------------------------------------------------
def _optional(type_: Any) -> tuple[Any, None]:
    """An optional body field: None (or left out) means "not given"."""
    return type_ | None, None


def _instance_fields() -> list[tuple[Any, ...]]:
    """Each field of the table a REST body may set, in the order of `InstanceSpec`, typed by
    its rule; optional unless every instance needs it."""
    fields: list[tuple[Any, ...]] = []
    for info in msgspec.structs.fields(InstanceSpec):
        field = FIELDS[info.name]
        if field.rule is None or not field.rest:
            continue
        rest = field.rule.rest
        fields.append((info.name, rest) if info.required else (info.name, *_optional(rest)))
        if info.name == "gpu":
            fields.append(("gpu_id", *_optional(GpuIndex)))  # tei-manager's name for one `gpu`
    return fields


#: The fields of one instance, as in a `[instances.<name>]` table of the state file.
InstanceFields = msgspec.defstruct(
    "InstanceFields", _instance_fields(), bases=(Request,), frozen=True, kw_only=True
)
CreateInstanceRequest = msgspec.defstruct(
    "CreateInstanceRequest",
    [("name", InstanceName)],
    bases=(InstanceFields,),
    namespace={"__doc__": "`POST /instances`: tei-manager's CreateInstanceRequest."},
    frozen=True,
    kw_only=True,
)
ApplyInstanceRequest = msgspec.defstruct(
    "ApplyInstanceRequest",
    [("name", *_optional(InstanceName))],
    bases=(InstanceFields,),
    namespace={
        "__doc__": "`PUT /instances/{name}`: the whole instance; `name`, when given, must "
        "match the path."
    },
    frozen=True,
    kw_only=True,
)


# ---- responses -----------------------------------------------------------------------------
class ErrorDetail(Response, frozen=True, kw_only=True):
    field: str  # request field (or dotted state-file path) the problem is about; "" for the body
    message: str
    line: int | None = None  # state-file position, for `PUT /state`
    column: int | None = None


class ErrorResponse(Response, frozen=True, kw_only=True):
    """Every non-2xx answer, parse, routing and auth errors included."""

    error: str
    code: str
    timestamp: datetime
    details: list[ErrorDetail] | None = None


class ConditionOut(Response, frozen=True, kw_only=True):
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: datetime


class ExitOut(Response, frozen=True, kw_only=True):
    """How the instance's last process ended (kubectl describe's Last State)."""

    code: int | None  # exit status, when it exited
    signal: int | None  # signal number, when a signal ended it
    signal_name: str | None  # e.g. "SIGKILL"
    at: datetime
    reason: str  # Completed, Error, Killed (on its own) or the reconciler's stop reason
    message: str  # the above in words, e.g. "exited with code 1"
    last_lines: list[str]  # the last lines the process wrote (its log's end, secrets masked)


class ProcessOut(Response, frozen=True, kw_only=True):
    """One live process of the instance: the current one, and during a surge rollout the new
    one starting beside it (`next`) or the old one draining after the switch (`old`)."""

    role: Literal["current", "next", "old"]
    pid: int
    port: int | None
    prometheus_port: int | None
    spec_hash: str  # the revision of the spec it runs
    state: Literal["Starting", "Ready", "Unhealthy", "Draining"]
    created_at: datetime
    ready_since: datetime | None
    adopted: bool  # found running by this reconciler at its start


class RolloutOut(Response, frozen=True, kw_only=True):
    """How the instance gets to its desired spec, as `kubectl rollout status` tells it:
    `complete` once its only process runs the desired spec and is Ready (or, desired stopped,
    none runs), `failed` when the last attempt at the desired spec failed (the old process
    keeps serving; it is retried with backoff), else `progressing`."""

    strategy: Rollout  # how a change rolls out: surge (beside the old process) or recreate
    state: Literal["complete", "progressing", "failed"]
    reason: str
    message: str
    spec_hash: str  # the revision of the desired spec
    current_spec_hash: str | None  # the revision the current process runs
    attempts: int  # failed attempts at the desired spec in a row


class InstanceOut(Response, frozen=True, kw_only=True):
    """One instance: tei-manager's InstanceInfo keys, then the reconciler's status."""

    name: str
    model_id: str
    port: int | None
    status: AnchorStatus
    pid: int | None
    created_at: datetime | None
    uptime_secs: int | None
    restarts: int
    health_check_failures: int
    last_health_check: datetime | None
    gpu_id: int | None
    prometheus_port: int | None
    phase: Phase
    ready: bool
    reason: str
    message: str
    desired_state: DesiredRun
    conditions: list[ConditionOut]
    spec: dict[str, Any]  # the desired spec, as the state file holds it after defaults
    last_exit: ExitOut | None
    backoff_until: datetime | None
    events: str  # URL of this instance's event log
    processes: list[ProcessOut]  # every live process, current first
    rollout: RolloutOut
    routed_by: str | None = None  # the data plane sending new calls to it now (envoy, grpcio)


class EventOut(Response, frozen=True, kw_only=True):
    instance: str  # "" for manager-wide and model events
    model: str  # the model a model event is about, else ""
    type: str  # "Normal" | "Warning"
    reason: str
    message: str
    count: int
    first_time: datetime
    last_time: datetime


class LogsResponse(Response, frozen=True, kw_only=True):
    """tei-manager's LogsResponse: `lines[start:end]`, with start/end normalised as Python does."""

    lines: list[str]
    start: int
    end: int
    total_lines: int


class PlannedAction(Response, frozen=True, kw_only=True):
    """One step the controller would take: e.g. ("bge", "start", "desired running, no process")."""

    instance: str
    action: str
    reason: str


class PlanResponse(Response, frozen=True, kw_only=True):
    revision: str  # revision of the desired state the plan was computed from
    valid: bool  # false: the state file is invalid and the plan uses the last good state
    errors: list[ErrorDetail]
    actions: list[PlannedAction]
    # The state file belongs to GitOps (a symlink, a read-only mount): every write answers
    # 409 STATE_READ_ONLY. The dashboard disables its actions and shows the reason.
    read_only: bool = False
    read_only_reason: str | None = None


class StateWriteResponse(Response, frozen=True, kw_only=True):
    """`PUT /state`: the new revision (or, on a dry run, the one that would be written)."""

    revision: str
    dry_run: bool
    written: bool
    actions: list[PlannedAction]


class HealthResponse(Response, frozen=True, kw_only=True):
    status: Literal["healthy"]
    timestamp: datetime
    data_plane: DataPlaneStatus | None = None  # what carries the gRPC port


class ReadyResponse(Response, frozen=True, kw_only=True):
    status: Literal["ready"]
    timestamp: datetime
    revision: str  # of the desired state in force
    instances: int
    spec_valid: bool  # false: the file is invalid now and the last good state stays in force
    warnings: list[str]  # why spec_valid is false (the details are in GET /plan)
    data_plane: DataPlaneStatus | None = None


class ProgressOut(Response, frozen=True, kw_only=True):
    done_bytes: int
    total_bytes: int
    percent: float
    files_done: int
    files_total: int


class ModelMetadataOut(ModelFacts, frozen=True, kw_only=True, omit_defaults=True):
    """tei-manager's `metadata` (each key omitted when unknown), plus the parameter count,
    dtype and sizes read from safetensors headers."""


class ModelCheckOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the check before start said of an instance on this model: `refused` (its binary
    cannot serve the model: the instance is Failed, reason UnsupportedModel, nothing started),
    or `warning` (the weights may not fit in its GPU's free memory; it started anyway)."""

    instance: str
    verdict: Literal["refused", "warning"]
    reason: str  # UnsupportedModel | InsufficientGPUMemory
    message: str
    at: datetime | None = None  # when the warning was last given


class ModelOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One model: tei-manager's ModelInfo keys (`cache_path`, `cache_size_bytes`, `metadata`
    omitted when unknown, as there), then the registry's own fields."""

    model_id: str
    status: Literal["available", "downloading", "downloaded", "failed"]
    downloaded: bool
    added_at: datetime | None = None
    cache_path: str | None = None
    cache_size_bytes: int | None = None
    metadata: ModelMetadataOut | None = None
    revision: str | None = None
    commit: str | None = None
    local: bool = False
    declared: bool = False
    keep: bool = False
    used_by: list[str] = msgspec.field(default_factory=list)
    progress: ProgressOut | None = None
    reason: str = ""
    message: str = ""
    retry_at: datetime | None = None
    failures: int = 0
    checks: list[ModelCheckOut] = msgspec.field(default_factory=list)  # per instance on it
    events: str = ""  # URL of this model's event log


class DeclareModelRequest(Request, frozen=True, kw_only=True):
    """`POST /models`: declare a model in the state file (tei-manager's body plus the table's
    own fields)."""

    model_id: str
    revision: str | None = None
    keep: bool | None = None
