"""The controller's mutable record of one instance.

`Runtime` holds the current process handle, probe state, crash history and ports of one
instance; `observe()` freezes what the planner needs into an `ObservedInstance`. The
controller and the actuator change it through its methods, one per event (a process
started, adopted or ended; a probe passed), so each event's writes stay together.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import NamedTuple

import anyio

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.drivers.process import ProcessHandle
from tei_reconciler.planner.backoff import CrashLoop
from tei_reconciler.planner.model_status import ModelGate
from tei_reconciler.planner.observed import Busy, Failure, ObservedInstance, ProcessView
from tei_reconciler.planner.status import ExitInfo, ProbeResult

PROBE_HISTORY = 20  # probe results kept per instance


class Placement(NamedTuple):
    """Where a process runs: its ports and the GPUs it sees (CUDA_VISIBLE_DEVICES)."""

    port: int | None = None
    prometheus_port: int | None = None
    gpu_id: str | None = None


class Probed(enum.Enum):
    """What one probe result changed (`Runtime.probed`)."""

    STARTUP_FAILED = "startup failed"  # still starting
    STARTED = "started"  # the startup probe passed: Ready
    HEALTHY = "healthy"  # nothing changed
    RECOVERED = "recovered"  # healthy again after failures: Ready again, count back at 0
    FAILED = "failed"  # a liveness probe failed (Ready lost at the threshold)


class Runtime:
    """What the controller knows and holds for one instance."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self.handle: ProcessHandle | None = None
        self.spec: InstanceSpec | None = None  # the spec the current process runs, if known
        self.busy: Busy | None = None
        self.stop_requested = False
        self.startup_ok = False
        self.ready = False
        self.consecutive_failures = 0
        self.probes: deque[ProbeResult] = deque(maxlen=PROBE_HISTORY)
        self.probe_scope: anyio.CancelScope | None = None
        self.crash = CrashLoop()
        self.failure: Failure | None = None
        self.failures = 0  # start failures in a row (for the slow retry curve)
        self.last_exit: ExitInfo | None = None
        self.restarts = 0
        self.generation = 0
        self.started_at = 0.0  # monotonic
        self.created_at: float | None = None  # wall
        self.ready_since: float | None = None  # wall
        self.ready_since_mono: float | None = None
        self.placement = Placement()  # of the current (or last) process
        self.model_gate: ModelGate | None = None  # its model is not on disk yet
        self.log_offset = 0  # size of the instance log when the current process started

    def attach(
        self,
        handle: ProcessHandle,
        *,
        spec: InstanceSpec | None,
        placement: Placement,
        now: float,
        created_at: float,
    ) -> None:
        """A new process (spawned or adopted) now represents the instance."""
        self.handle = handle
        self.spec = spec
        self.placement = placement
        self.generation += 1
        self.stop_requested = False
        self.startup_ok = self.ready = False
        self.consecutive_failures = 0
        self.started_at = now
        self.created_at = created_at
        self.ready_since = self.ready_since_mono = None

    def started(
        self,
        handle: ProcessHandle,
        *,
        spec: InstanceSpec,
        placement: Placement,
        log_offset: int,
        now: float,
        wall: float,
    ) -> None:
        """A process this reconciler spawned now represents the instance: a restart when
        one ran before, and the end of any start failure. Its output starts at `log_offset`
        in the instance's log."""
        if self.generation > 0:
            self.restarts += 1
        self.attach(handle, spec=spec, placement=placement, now=now, created_at=wall)
        self.log_offset = log_offset
        self.failure = None  # the count stays until it is Ready: a refused key backs off too

    def ended(self, exit_: ExitInfo) -> None:
        """The process is gone: how it ended is kept, its probes stop."""
        self.cancel_probes()
        self.last_exit = exit_
        self.detach()

    def detach(self) -> None:
        self.handle = None
        self.stop_requested = False
        self.startup_ok = self.ready = False
        self.consecutive_failures = 0
        self.ready_since = self.ready_since_mono = None

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
        under load does not cut the instance's traffic: Ready is lost after `threshold`
        failures in a row, which is also when the planner restarts the instance."""
        if not self.startup_ok:
            if not ok:
                return Probed.STARTUP_FAILED
            self.startup_ok = True
            self.failures = 0
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
        """How long the current process has been Ready (for the backoff reset)."""
        return 0.0 if self.ready_since_mono is None else now - self.ready_since_mono

    def record_probe(self, result: ProbeResult) -> None:
        self.probes.append(result)

    def observe(self) -> ObservedInstance:
        handle = self.handle
        process = None
        if handle is not None:
            process = ProcessView(
                pid=handle.pid,
                spec_hash=handle.spec_hash,
                started_at=self.started_at,
                adopted=handle.adopted,
            )
        return ObservedInstance(
            name=self.name,
            process=process,
            busy=self.busy,
            startup_ok=self.startup_ok,
            ready=self.ready,
            consecutive_failures=self.consecutive_failures,
            crash=self.crash,
            failure=self.failure,
            model=self.model_gate,
        )
