"""Following a process: its exit and its health, as data the planner reads.

Every process the actuator spawns, and every one adoption takes over, is followed by two
tasks: one waits for its exit (a crash of the current process starts the crash backoff; of a
rollout's new process, fails the rollout), one probes it (startup, then liveness). Each
writes what happened into the process's record and asks the controller for a pass; neither
decides what to do next. `Actuator` builds on this with the actions themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import msgspec

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.control.runtime import Probed, ProcessRecord, Role, Runtime
from tei_reconciler.drivers.logtail import last_lines
from tei_reconciler.drivers.ports import PortBook
from tei_reconciler.drivers.probe import ProbeOutcome, Prober, ProbeTarget, probe_forever
from tei_reconciler.planner.backoff import BackoffPolicy
from tei_reconciler.planner.observed import RolloutFailure
from tei_reconciler.planner.policy import Policy
from tei_reconciler.planner.status import ExitInfo, ProbeResult, exit_summary
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.tasks import scoped

log = logging.getLogger(__name__)

#: The `tei_reconciler_rollouts` outcome of each way a rollout fails.
_OUTCOME = {"RolloutFailed": "failed", "ProgressDeadlineExceeded": "deadline_exceeded"}


class Following:
    """What following a process needs (the actuator sets all of it up)."""

    settings: Settings
    prober: Prober
    ports: PortBook
    store: StatusStore
    clock: Clock
    policy: Policy
    backoff: BackoffPolicy
    changed: Callable[[], None]
    spawn: Callable[..., None]

    def follow(self, rt: Runtime, record: ProcessRecord) -> None:
        """Watch a new (spawned or adopted) process: its exit and its health."""
        self.spawn(self.watch_exit, rt, record)
        self.spawn(self.probe_loop, rt, record)

    def _rollout_failed(
        self, rt: Runtime, reason: str, message: str, hash_: str, wall: float
    ) -> None:
        """The rollout to `hash_` failed; the current process keeps serving."""
        previous = rt.rollout_failure
        attempts = previous.attempts + 1 if previous and previous.spec_hash == hash_ else 1
        rt.rollout_failure = RolloutFailure(
            reason=reason, message=message, spec_hash=hash_, attempts=attempts
        )
        metrics.ROLLOUTS.labels(_OUTCOME[reason]).inc()
        self.store.record_event(rt.name, "Warning", reason, message, wall)

    async def watch_exit(self, rt: Runtime, record: ProcessRecord) -> None:
        exit_ = await record.handle.watch()
        if record.stop_requested or rt.role_of(record) is None:
            return  # a stop we asked for: whoever stopped it does the bookkeeping
        self.on_crash(rt, record, exit_)

    def on_crash(self, rt: Runtime, record: ProcessRecord, exit_: ExitInfo) -> None:
        now = self.clock.now()
        healthy_for = record.healthy_for(now)
        exit_ = msgspec.structs.replace(exit_, last_lines=self._last_lines(rt, record))
        role = rt.ended(record, exit_)
        if role is None or role is Role.OLD:  # the old one of a rollout: its stop goes on
            self.changed()
            return
        rt.crashed(record, now=now, healthy_for=healthy_for, policy=self.backoff)
        how = exit_summary(exit_)
        last = f': "{exit_.last_lines[-1]}"' if exit_.last_lines else ""
        wall = self.clock.wall()
        if role is Role.NEXT:
            self.ports.release_next(rt.name)
            message = f"new process pid {record.pid} {how}{last}; retry in {rt.crash.delay:g}s"
            self._rollout_failed(rt, "RolloutFailed", message, record.spec_hash, wall)
            log.warning("%s: rollout failed: %s", rt.name, message)
        else:
            metrics.RESTARTS.labels("Crashed").inc()
            then = f"restart in {rt.crash.delay:g}s"
            if rt.next is not None:  # a rollout's new process is there to take over
                then = f"new process pid {rt.next.pid} takes over"
            message = f"pid {record.pid} {how}{last}; {then}"
            self.store.record_event(rt.name, "Warning", "BackOff", message, wall)
            log.warning("%s: %s", rt.name, message)
        self.changed()

    def _last_lines(self, rt: Runtime, record: ProcessRecord) -> tuple[str, ...]:
        """The end of what the process that just ended wrote (a bounded read of its log)."""
        return last_lines(record.log_path, since=record.log_offset)

    async def probe_loop(self, rt: Runtime, record: ProcessRecord) -> None:
        """Probe `record`'s process until it ends; results go into it and may mark dirty."""
        port = record.placement.port
        if port is None or rt.role_of(record) is None:
            return  # it exited (or was replaced) before this task began: nothing to cancel us
        policy = self.policy.for_instance(record.spec)

        def report(outcome: ProbeOutcome) -> None:
            if rt.role_of(record) is None:
                return
            wall = self.clock.wall()
            record.probes.append(
                ProbeResult(
                    at=wall, ok=outcome.ok, latency_ms=outcome.latency_ms, message=outcome.message
                )
            )
            if outcome.refused:
                self.on_refused(rt, record, outcome.message, wall)
            elif self.on_probe(rt, record, outcome.ok, outcome.message, wall):
                self.changed()

        target = ProbeTarget(
            name=rt.name,
            pid=record.pid,
            host=self.settings.instance_host,
            port=port,
            api_key=record.handle.api_key,
        )
        with scoped(anyio.CancelScope()) as scope:
            record.probe_scope = scope
            await probe_forever(
                self.prober,
                target,
                interval=policy.health_interval_secs,
                within=policy.health_timeout_secs,
                started=lambda: record.startup_ok,
                report=report,
            )

    def on_refused(self, rt: Runtime, record: ProcessRecord, message: str, wall: float) -> None:
        """The process refused the probe's credentials: no probe will ever pass, so waiting
        out the startup timeout would only hide why. It is stopped (a rollout's new process:
        the rollout fails) and the instance fails with the reason `Unauthenticated`, retried
        on the slow curve."""
        if rt.failure is not None and rt.failure.pid == record.pid:
            return  # already condemned: the stop is on its way
        if record.handle.api_key is None:
            why = "it requires an API key: set api_key_file (never --api-key in extra_args)"
        else:
            why = "it runs with another API key than the one it was started with"
        refused = f"the instance refused the probe ({message}): {why}"
        delay = rt.failed(
            "Unauthenticated",
            refused,
            spec_hash=record.spec_hash,
            now=self.clock.now(),
            policy=self.backoff,
            pid=record.pid,
        )
        metrics.PROBE_FAILURES.labels("startup" if not record.startup_ok else "liveness").inc()
        self.store.record_event(rt.name, "Warning", "Unauthenticated", refused, wall)
        log.warning("%s: %s (retry in %gs)", rt.name, refused, delay)
        self.changed()

    def on_probe(
        self, rt: Runtime, record: ProcessRecord, ok: bool, message: str, wall: float
    ) -> bool:
        """Fold one probe result into the process's record; True when a pass should look."""
        threshold = self.policy.for_instance(record.spec).failure_threshold
        verdict = record.probed(ok, threshold=threshold, now=self.clock.now(), wall=wall)
        new = rt.role_of(record) is Role.NEXT
        if verdict is Probed.STARTUP_FAILED:
            metrics.PROBE_FAILURES.labels("startup").inc()
        elif verdict is Probed.STARTED:
            rt.failures = 0  # the slow retry curve starts over
            reason = "NewProcessReady" if new else "Ready"
            what = f"pid {record.pid} " if new else ""
            self.store.record_event(
                rt.name, "Normal", reason, f"{what}startup probe succeeded", wall
            )
        elif verdict is Probed.FAILED:
            metrics.PROBE_FAILURES.labels("liveness").inc()
            self.store.record_event(
                rt.name, "Warning", "Unhealthy", f"liveness probe failed: {message}", wall
            )
        # A recovery needs a pass too: it publishes the failure count back at 0.
        return verdict in (Probed.STARTED, Probed.RECOVERED, Probed.FAILED)
