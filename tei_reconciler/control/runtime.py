"""The controller's mutable record of one instance.

`Runtime` holds the current process handle, probe state, crash history and ports of one
instance; `observe()` freezes what the planner needs into an `ObservedInstance`.
"""

from __future__ import annotations

from collections import deque

import anyio

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.drivers.process import ProcessHandle
from tei_reconciler.planner.backoff import CrashLoop
from tei_reconciler.planner.observed import Busy, Failure, ObservedInstance, ProcessView
from tei_reconciler.planner.status import ExitInfo, ProbeResult

PROBE_HISTORY = 20  # probe results kept per instance


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
        self.port: int | None = None
        self.prometheus_port: int | None = None
        self.gpu_id: str | None = None
        self.log_offset = 0  # size of the instance log when the current process started

    def attach(
        self, handle: ProcessHandle, *, spec: InstanceSpec | None, now: float, wall: float
    ) -> None:
        """A new process (spawned or adopted) now represents the instance."""
        self.handle = handle
        self.spec = spec
        self.generation += 1
        self.stop_requested = False
        self.startup_ok = self.ready = False
        self.consecutive_failures = 0
        self.started_at = now
        self.created_at = wall
        self.ready_since = self.ready_since_mono = None

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
        )
