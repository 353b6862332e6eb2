"""Observed state: what the controller saw of one instance at the start of a pass.

The controller keeps mutable bookkeeping per instance (process handles, probe tasks); at the
start of every pass it freezes the facts the planner needs into these Structs. The planner
sees only this snapshot and `now`, so every decision is reproducible in a table test.
All times here are monotonic seconds from the controller's clock.
"""

from __future__ import annotations

import enum

import msgspec

from tei_reconciler.planner.backoff import CrashLoop, waiting
from tei_reconciler.planner.model_status import ModelGate


class Busy(enum.StrEnum):
    """An action in flight for an instance; the planner leaves a busy instance alone."""

    STARTING = "starting"  # spawning a process (port, GPU and binary checks included)
    STOPPING = "stopping"  # draining the current process, then stopping its group
    SWITCHING = "switching"  # traffic moved to the new process; draining and stopping the old
    ABORTING = "aborting"  # stopping the new process of a rollout (it never took traffic)


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A start failed in a way no quick restart fixes (binary missing, GPU absent, port held),
    or a started process can never serve (`pid`: it refused the probe's credentials). Retried
    at `retry_at`, or at once when the spec changes."""

    reason: str
    message: str
    retry_at: float
    spec_hash: str
    pid: int | None = None  # the process it condemns (stopped first); None: a failed start


class RolloutFailure(msgspec.Struct, frozen=True, kw_only=True):
    """The last rollout to `spec_hash` failed: its new process crashed, could not start, or
    was not Ready in time. The old process kept serving; the attempt is retried with the
    crash backoff, or replaced at once by a further spec change."""

    reason: str  # "RolloutFailed" | "ProgressDeadlineExceeded"
    message: str
    spec_hash: str
    attempts: int = 1  # failed attempts in a row for this spec


class ProcessView(msgspec.Struct, frozen=True, kw_only=True):
    """A live process of an instance, as found (spawned by us or adopted)."""

    pid: int
    spec_hash: str  # the hash the process was started with (its marker)
    started_at: float  # when we spawned or adopted it
    adopted: bool = False


class ObservedInstance(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the planner may know about one instance."""

    name: str
    process: ProcessView | None = None  # the current process: the one routed to when Ready
    busy: Busy | None = None
    startup_ok: bool = False  # the startup probe of the current process succeeded
    ready: bool = False  # the latest probe of the current process succeeded
    consecutive_failures: int = 0  # liveness failures in a row
    next: ProcessView | None = None  # a rollout's new process, started beside the current one
    next_ready: bool = False  # the new process passed its startup probe
    rollout_failure: RolloutFailure | None = None
    crash: CrashLoop = msgspec.field(default_factory=CrashLoop)
    failure: Failure | None = None
    model: ModelGate | None = None  # its model is not on disk yet (or cannot be fetched)

    def start_held(self, spec_hash: str, now: float) -> tuple[bool, float | None]:
        """Whether a start of `spec_hash` must wait at `now`, and until when: a failed start's
        retry time, the crash backoff's end, or None while its model is not on disk (the model
        registry asks for a pass once it is)."""
        failure = self.failure
        if failure is not None and failure.spec_hash == spec_hash and failure.retry_at > now:
            return True, failure.retry_at
        if waiting(self.crash, now=now, spec_hash=spec_hash):
            return True, self.crash.until
        return self.model is not None, None
