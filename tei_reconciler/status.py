"""The status store: what the controller observed and did, for the API, metrics and router.

The controller is the only writer; the REST API, the metrics collector and the CLI read it.
Readers get immutable Structs, so a snapshot can be encoded or compared without locks. Changes
are published to subscribers (the API's SSE watch) through bounded anyio memory streams: a
subscriber that cannot keep up loses the oldest notifications, never blocks the controller.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tei_reconciler.spec import InstanceSpec

log = logging.getLogger("tei_reconciler.events")


class Phase(enum.StrEnum):
    """Where an instance is in its lifecycle. Only the planner decides transitions."""

    PENDING = "Pending"  # desired running, no process yet (waiting for a start slot or a port)
    STARTING = "Starting"  # process spawned, startup probe not yet passed
    RUNNING = "Running"  # startup probe passed; liveness probing
    STOPPING = "Stopping"  # SIGTERM sent, waiting for the group to exit
    STOPPED = "Stopped"  # desired stopped and no process
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"  # died or failed liveness; waiting before restart
    FAILED = "Failed"  # no restart fixes it (binary missing, GPU absent, port held): retried slowly


#: DESIGN.md section 6: tei-manager's `status` vocabulary for each phase.
ANCHOR_STATUS: dict[Phase, str] = {
    Phase.PENDING: "starting",
    Phase.STARTING: "starting",
    Phase.RUNNING: "running",
    Phase.STOPPING: "stopping",
    Phase.STOPPED: "stopped",
    Phase.CRASH_LOOP_BACK_OFF: "failed",
    Phase.FAILED: "failed",
}


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
    reason: str  # "Completed", "Error", "Killed", "Stopped", ...


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # epoch seconds
    ok: bool
    latency_ms: float
    message: str


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A Kubernetes-style event: repeats of the same (type, reason, message) bump `count`."""

    instance: str  # "" for manager-wide events (spec errors)
    type: str  # "Normal" | "Warning"
    reason: str
    message: str
    count: int
    first_time: float
    last_time: float


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

    @property
    def ready(self) -> bool:
        return self.phase is Phase.RUNNING and self.ready_since is not None


class StoreChange(msgspec.Struct, frozen=True, kw_only=True):
    """A notification to subscribers: `status` is None when the instance was forgotten."""

    name: str
    status: InstanceStatus | None


class StatusStore:
    """In-memory status of every instance and a bounded event log per instance."""

    def __init__(self, *, events_per_instance: int = 100, subscriber_buffer: int = 256) -> None:
        self._statuses: dict[str, InstanceStatus] = {}
        self._events: dict[str, OrderedDict[tuple[str, str, str], Event]] = {}
        self._events_per_instance = events_per_instance
        self._subscriber_buffer = subscriber_buffer
        self._subscribers: set[MemoryObjectSendStream[StoreChange]] = set()
        self.spec_errors: tuple[str, ...] = ()  # errors of the current state file, if invalid
        self.first_pass_done = False
        self.observed_revision = ""  # revision of the last valid desired state acted on

    # ---- reads -------------------------------------------------------------------------
    def get(self, name: str) -> InstanceStatus | None:
        return self._statuses.get(name)

    def all(self) -> list[InstanceStatus]:
        return [self._statuses[n] for n in sorted(self._statuses)]

    def events(self, name: str | None = None) -> list[Event]:
        """Events of one instance (or of all, `name=None`), oldest first."""
        if name is not None:
            return list(self._events.get(name, {}).values())
        merged = [e for log in self._events.values() for e in log.values()]
        return sorted(merged, key=lambda e: e.last_time)

    @contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[StoreChange]]:
        send, receive = anyio.create_memory_object_stream[StoreChange](self._subscriber_buffer)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    # ---- writes (controller only) ------------------------------------------------------
    def put(self, status: InstanceStatus) -> None:
        if self._statuses.get(status.name) == status:
            return
        self._statuses[status.name] = status
        self._publish(StoreChange(name=status.name, status=status))

    def forget(self, name: str) -> None:
        if self._statuses.pop(name, None) is not None:
            self._publish(StoreChange(name=name, status=None))
        self._events.pop(name, None)

    def record_event(
        self, instance: str, type_: str, reason: str, message: str, at: float
    ) -> Event:
        events = self._events.setdefault(instance, OrderedDict())
        key = (type_, reason, message)
        previous = events.pop(key, None)
        event = Event(
            instance=instance,
            type=type_,
            reason=reason,
            message=message,
            count=1 if previous is None else previous.count + 1,
            first_time=at if previous is None else previous.first_time,
            last_time=at,
        )
        events[key] = event
        while len(events) > self._events_per_instance:
            events.popitem(last=False)
        _log_event(event)
        return event

    def _publish(self, change: StoreChange) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(change)
            except anyio.WouldBlock:
                continue  # a slow reader misses intermediate states; it re-reads on the next one
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)


def _log_event(event: Event) -> None:
    """Every event also goes to the log, so `journalctl`/`kubectl logs` tell the same story."""
    level = logging.WARNING if event.type == "Warning" else logging.INFO
    subject = event.instance or "state file"
    log.log(level, "%s: %s: %s", subject, event.reason, event.message)
