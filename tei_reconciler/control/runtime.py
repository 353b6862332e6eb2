"""The controller's mutable record of one instance and of each of its processes.

An instance has at most three processes: the current one (routed to when Ready), during a
surge rollout the next one (starting beside it, not routed to yet), and after the switch the
old one (out of routing, draining, then stopped). `ProcessRecord` holds one process: its
handle, placement, probe state; `Runtime` holds the instance: its processes, crash history,
start failures, rollout failure and counters. `observe()` freezes what the planner needs
into an `ObservedInstance`. The controller and the actuator change them through their
methods, one per event (a process started, adopted, switched, crashed or ended; a start
failed; a probe passed), so each event's writes stay together. Whoever starts or adopts a
process builds its `ProcessRecord`; the `Runtime` numbers it (`generation`) as it joins.
"""

from __future__ import annotations

import enum
from collections import deque
from pathlib import Path
from typing import NamedTuple

import anyio

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.drivers.process import ProcessHandle
from tei_reconciler.planner.backoff import BackoffPolicy, CrashLoop, delay_for, record_crash
from tei_reconciler.planner.model_status import ModelGate
from tei_reconciler.planner.observed import (
    Busy,
    Failure,
    ObservedInstance,
    ProcessView,
    RolloutFailure,
)
from tei_reconciler.planner.status import ExitInfo, ProbeResult

PROBE_HISTORY = 20  # probe results kept per process


class Placement(NamedTuple):
    """Where a process runs: its ports and the GPUs it sees (CUDA_VISIBLE_DEVICES)."""

    port: int | None = None
    prometheus_port: int | None = None
    gpu_id: str | None = None


class Probed(enum.Enum):
    """What one probe result changed (`ProcessRecord.probed`)."""

    STARTUP_FAILED = "startup failed"  # still starting
    STARTED = "started"  # the startup probe passed: Ready
    HEALTHY = "healthy"  # nothing changed
    RECOVERED = "recovered"  # healthy again after failures: Ready again, count back at 0
    FAILED = "failed"  # a liveness probe failed (Ready lost at the threshold)


class Role(enum.StrEnum):
    """What a process is to its instance."""

    CURRENT = "current"  # routed to when Ready
    NEXT = "next"  # a rollout's new process, starting beside the current one
    OLD = "old"  # replaced by a rollout: out of routing, draining, then stopped


class ProcessRecord:
    """One process of an instance (spawned by us or adopted) and what its probes said."""

    def __init__(
        self,
        handle: ProcessHandle,
        *,
        spec: InstanceSpec | None,
        placement: Placement,
        now: float,
        created_at: float,
        log_path: Path,
        log_offset: int = 0,
    ) -> None:
        self.handle = handle
        self.spec = spec  # the spec it runs, if known (None: adopted, spec not desired now)
        self.placement = placement
        self.generation = 0  # unique per instance, set by `Runtime`: routing tells them apart
        self.started_at = now  # monotonic
        self.created_at = created_at  # wall
        self.log_path = log_path  # where its output goes (moves when a rollout hands over)
        self.log_offset = log_offset  # size of that log when it started
        self.stop_requested = False
        self.startup_ok = False
        self.ready = False
        self.consecutive_failures = 0
        self.ready_since: float | None = None  # wall
        self.ready_since_mono: float | None = None
        self.probes: deque[ProbeResult] = deque(maxlen=PROBE_HISTORY)
        self.probe_scope: anyio.CancelScope | None = None

    @property
    def pid(self) -> int:
        return self.handle.pid

    @property
    def spec_hash(self) -> str:
        return self.handle.spec_hash

    def cancel_probes(self) -> None:
        if self.probe_scope is not None:
            self.probe_scope.cancel()
            self.probe_scope = None

    def mark_ready(self, now: float, wall: float) -> None:
        self.ready = True
        if self.ready_since_mono is None:
            self.ready_since_mono = now
        self.ready_since = wall

    def probed(self, ok: bool, *, threshold: int, now: float, wall: float) -> Probed:
        """Fold one probe result in. Like a Kubernetes readiness probe, one slow health check
        under load does not cut the process's traffic: Ready is lost after `threshold`
        failures in a row, which is also when the planner restarts it."""
        if not self.startup_ok:
            if not ok:
                return Probed.STARTUP_FAILED
            self.startup_ok = True
            self.mark_ready(now, wall)
            return Probed.STARTED
        if ok:
            recovered = self.consecutive_failures > 0 or not self.ready
            self.consecutive_failures = 0
            if not self.ready:
                self.mark_ready(now, wall)
            return Probed.RECOVERED if recovered else Probed.HEALTHY
        self.consecutive_failures += 1
        if self.consecutive_failures >= threshold:
            self.ready = False
        return Probed.FAILED

    def healthy_for(self, now: float) -> float:
        """How long the process has been Ready (for the backoff reset)."""
        return 0.0 if self.ready_since_mono is None else now - self.ready_since_mono

    def view(self) -> ProcessView:
        return ProcessView(
            pid=self.handle.pid,
            spec_hash=self.handle.spec_hash,
            started_at=self.started_at,
            adopted=self.handle.adopted,
        )


class Runtime:
    """What the controller knows and holds for one instance."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self.current: ProcessRecord | None = None
        self.next: ProcessRecord | None = None
        self.old: ProcessRecord | None = None
        self.busy: Busy | None = None
        self.crash = CrashLoop()
        self.failure: Failure | None = None
        self.failures = 0  # start failures in a row (for the slow retry curve)
        self.rollout_failure: RolloutFailure | None = None
        self.last_exit: ExitInfo | None = None
        self.last_probes: tuple[ProbeResult, ...] = ()  # of the last current process that ended
        self.restarts = 0
        self.generation = 0  # of the newest process
        self.placement = Placement()  # of the current (or last) process
        self.model_gate: ModelGate | None = None  # its model is not on disk yet

    # ---- what runs ---------------------------------------------------------------------
    @property
    def handle(self) -> ProcessHandle | None:
        """The current process's handle."""
        return self.current.handle if self.current is not None else None

    @property
    def spec(self) -> InstanceSpec | None:
        """The spec the current process runs, if known."""
        return self.current.spec if self.current is not None else None

    def processes(self) -> list[tuple[Role, ProcessRecord]]:
        """Every live process of the instance, current first."""
        roles = ((Role.CURRENT, self.current), (Role.NEXT, self.next), (Role.OLD, self.old))
        return [(role, record) for role, record in roles if record is not None]

    def role_of(self, record: ProcessRecord) -> Role | None:
        for role, mine in self.processes():
            if mine is record:
                return role
        return None

    # ---- events ------------------------------------------------------------------------
    def _add(self, record: ProcessRecord, *, beside: bool) -> ProcessRecord:
        """`record` numbered as the instance's newest process, current or (`beside`) next."""
        self.generation += 1
        record.generation = self.generation
        if beside:
            self.next = record
        else:
            self.current = record
            self.placement = record.placement
        return record

    def attach(self, record: ProcessRecord, *, role: Role = Role.CURRENT) -> ProcessRecord:
        """A process found running (adopted) now represents the instance, or is the new
        process of its rollout (`role`)."""
        return self._add(record, beside=role is Role.NEXT)

    def started(self, record: ProcessRecord, *, beside: bool = False) -> ProcessRecord:
        """A process this reconciler spawned: the instance's current process (a restart when
        one ran before), or with `beside` the new process of a rollout. Either ends any start
        failure."""
        self._add(record, beside=beside)
        if not beside and self.generation > 1:
            self.restarts += 1
        self.failure = None  # the count stays until it is Ready: a refused key backs off too
        return record

    def promote(self) -> ProcessRecord | None:
        """The new process becomes the current one; the former current one, if any, becomes
        the old one (to drain and stop). Returns the old one."""
        new = self.next
        assert new is not None, "promote() needs a new process"
        old = self.current
        self.current, self.next, self.old = new, None, old
        self.placement = new.placement
        self.restarts += 1
        if self.rollout_failure is not None and self.rollout_failure.spec_hash == new.spec_hash:
            self.rollout_failure = None
        return old

    def ended(self, record: ProcessRecord, exit_: ExitInfo) -> Role | None:
        """`record`'s process is gone: how it ended is kept, its probes stop. Returns the role
        it had (None when it was no longer the instance's)."""
        record.cancel_probes()
        record.ready = False
        role = self.role_of(record)
        if role is Role.CURRENT:
            self.current = None
            self.last_probes = tuple(record.probes)  # why it was replaced stays readable
        elif role is Role.NEXT:
            self.next = None
        elif role is Role.OLD:
            self.old = None
        if role is not None:
            self.last_exit = exit_
        return role

    def crashed(
        self, record: ProcessRecord, *, now: float, healthy_for: float, policy: BackoffPolicy
    ) -> None:
        """`record`'s process crashed, failed its probes, or failed its rollout, after being
        Ready for `healthy_for` seconds: one more step on the backoff curve for its spec."""
        self.crash = record_crash(
            self.crash, now=now, healthy_for=healthy_for, spec_hash=record.spec_hash, policy=policy
        )

    def failed(
        self,
        reason: str,
        message: str,
        *,
        spec_hash: str,
        now: float,
        policy: BackoffPolicy,
        pid: int | None = None,
    ) -> float:
        """A start of `spec_hash` failed, or the started process `pid` can never serve: one
        more step on the slow retry curve. Returns the delay before the retry."""
        self.failures += 1
        delay = delay_for(self.failures, policy)
        self.failure = Failure(
            reason=reason, message=message, retry_at=now + delay, spec_hash=spec_hash, pid=pid
        )
        return delay

    def cancel_probes(self) -> None:
        for _, record in self.processes():
            record.cancel_probes()

    def healthy_for(self, now: float) -> float:
        """How long the current process has been Ready (for the backoff reset)."""
        return 0.0 if self.current is None else self.current.healthy_for(now)

    # ---- the planner's view ------------------------------------------------------------
    def observe(self) -> ObservedInstance:
        current, new = self.current, self.next
        return ObservedInstance(
            name=self.name,
            process=current.view() if current is not None else None,
            busy=self.busy,
            startup_ok=current is not None and current.startup_ok,
            ready=current is not None and current.ready,
            consecutive_failures=current.consecutive_failures if current is not None else 0,
            next=new.view() if new is not None else None,
            next_ready=new is not None and new.startup_ok,
            crash=self.crash,
            failure=self.failure,
            model=self.model_gate,
            rollout_failure=self.rollout_failure,
        )
