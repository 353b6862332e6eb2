"""Status records: what the controller observed and did, as immutable Structs.

Conditions, exits, probe results, events and the per-instance status the REST API, the
metrics and the CLI read (the phase enum is in `phase.py`). Pure; the mutable store that holds
them lives in `store.py`.
"""

from __future__ import annotations

import signal

import msgspec

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.planner.observed import RolloutFailure
from tei_reconciler.planner.phase import Phase


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """Kubernetes-shaped condition. `type` is one of Ready, Progressing, Degraded, SpecValid."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_transition_time: float  # epoch seconds


class ExitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How the last process of an instance ended."""

    code: int | None  # exit status when it exited
    signal: int | None  # signal number when it was killed
    at: float  # epoch seconds
    reason: str  # "Completed", "Error", "Killed" (on its own), or the reconciler's stop reason
    last_lines: tuple[str, ...] = ()  # the end of what the process wrote, secrets masked


#: Why the reconciler itself stopped a process (the planner's stop and abort reasons, and
#: the retirement of a rollout's old process), in words.
STOPPED_BECAUSE: dict[str, str] = {
    "StoppedByUser": 'its state was set to "stopped"',
    "Removed": "it was removed from the state file",
    "SpecChanged": "its spec changed (it is restarted with the new one)",
    "StartupTimeout": "it was not Ready within startup_timeout_secs",
    "LivenessFailed": "failure_threshold health checks in a row failed",
    "Replaced": "a new process with the changed spec took over its traffic",
    "RolloutFailed": "the rollout it was started for failed",
    "ProgressDeadlineExceeded": "it was not Ready within progress_deadline_secs",
    "Superseded": "the spec changed again before it was Ready",
    "Unauthenticated": "it refused the API key its probe sent",
}


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `signal 64` for a number without a name on this system."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_summary(exit_: ExitInfo) -> str:
    """How the process ended, in words a person can act on."""
    if exit_.signal is not None:
        how = f"killed by {signal_name(exit_.signal)} (signal {exit_.signal})"
    elif exit_.code is not None:
        how = f"exited with code {exit_.code}"
    else:
        how = "ended (its exit status is unknown: it was not this reconciler's child)"
    because = STOPPED_BECAUSE.get(exit_.reason)
    if because is not None:
        return f"stopped by the reconciler because {because}: {how}"
    if exit_.signal is not None:
        return f"{how}, a signal the reconciler did not send"
    return how


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # epoch seconds
    ok: bool
    latency_ms: float
    message: str


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A Kubernetes-style event: repeats of the same (type, reason, message) bump `count`."""

    instance: str  # "" for manager-wide and model events
    type: str  # "Normal" | "Warning"
    reason: str
    message: str
    count: int
    first_time: float
    last_time: float
    model: str = ""  # the model a model event is about


class ProcessStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One live process of an instance: the current one, and during a surge rollout the new
    one starting beside it (`next`) or the old one draining after the switch (`old`)."""

    role: str  # "current" | "next" | "old"
    pid: int
    port: int | None
    prometheus_port: int | None
    spec_hash: str  # the spec it runs (its revision)
    state: str  # "Starting" | "Ready" | "Unhealthy" | "Draining"
    created_at: float  # epoch seconds
    ready_since: float | None = None  # epoch seconds
    adopted: bool = False


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Everything observed about one instance, plus the spec it was observed against."""

    name: str
    spec: InstanceSpec
    phase: Phase
    reason: str = ""
    message: str = ""
    pid: int | None = None
    port: int | None = None
    prometheus_port: int | None = None
    gpu_id: str | None = None  # CUDA_VISIBLE_DEVICES as given to the child ("" = CPU only)
    created_at: float | None = None  # epoch seconds the current process started
    ready_since: float | None = None  # epoch seconds the current process became Ready
    restarts: int = 0
    health_check_failures: int = 0  # consecutive
    last_health_check: float | None = None
    last_exit: ExitInfo | None = None
    backoff_until: float | None = None  # epoch seconds
    conditions: tuple[Condition, ...] = ()
    probes: tuple[ProbeResult, ...] = ()  # most recent last, bounded
    spec_hash: str | None = None  # the spec the current process runs
    processes: tuple[ProcessStatus, ...] = ()  # every live process, current first
    rollout_failure: RolloutFailure | None = None  # the last rollout failed (old serves)

    @property
    def ready(self) -> bool:
        return self.phase is Phase.RUNNING and self.ready_since is not None


class StoreChange(msgspec.Struct, frozen=True, kw_only=True):
    """A notification to subscribers: `status` is None when the instance was forgotten."""

    name: str
    status: InstanceStatus | None
