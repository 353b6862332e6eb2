"""Surge rollouts: the planner's decisions while an instance moves to a changed spec. Pure.

A Kubernetes Deployment with maxSurge 1 and maxUnavailable 0, for one process: the new
process starts beside the current one (`StartNext`); once its startup probe passes, routing
switches to it in one step and the old one drains and stops (`Promote`). The current process
serves throughout, so the instance never has zero Ready processes. A new process that dies,
cannot start, or is not Ready within `progress_deadline_secs` fails the rollout (`AbortNext`):
the old process keeps serving, the attempt is retried with the crash backoff, and a further
spec change replaces it at once. Nothing rolls the desired state back: the user edits it.

An instance rolls by recreate instead (stop, then start) when it asks to, when it pins a port
(two processes cannot listen on one), or when its current process is not Ready (there is
nothing to keep serving, and the old copy's memory is better freed first).
"""

from __future__ import annotations

import msgspec

from tei_reconciler.desired.spec import DesiredRun, InstanceSpec, Rollout, spec_hash
from tei_reconciler.planner.actions import AbortNext, Action, Promote, StartNext, Stop
from tei_reconciler.planner.observed import Busy, ObservedInstance, ProcessView
from tei_reconciler.planner.policy import Policy

Plan = tuple[Action | None, float | None]


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """The `Progressing` condition as a rollout sets it."""

    status: bool
    reason: str  # "RollingUpdate" | "RolloutFailed" | "ProgressDeadlineExceeded"
    message: str


def surges(spec: InstanceSpec, obs: ObservedInstance) -> bool:
    """Whether a change of `spec` rolls by surge (see the module docstring)."""
    pinned = spec.port is not None or spec.prometheus_port is not None
    return spec.rollout is Rollout.SURGE and not pinned and obs.ready


def progress_deadline(spec: InstanceSpec, policy: Policy) -> float:
    """Seconds a new process has to become Ready (default: the startup timeout)."""
    if spec.progress_deadline_secs is not None:
        return spec.progress_deadline_secs
    return policy.for_instance(spec).startup_timeout_secs


def plan_surge(spec: InstanceSpec, obs: ObservedInstance, now: float) -> Plan:
    """The current process runs an older spec and no new one runs yet: start it, unless a
    failed attempt at this spec still waits out its backoff or its model is not on disk."""
    held, until = obs.start_held(spec_hash(spec), now)
    if held:
        return None, until
    return StartNext(name=obs.name, spec=spec), None


def plan_next(
    spec: InstanceSpec | None,
    obs: ObservedInstance,
    new: ProcessView,
    now: float,
    policy: Policy,
) -> Plan:
    """A rollout's new process runs beside the current one (or the current one is gone)."""
    name = obs.name
    if spec is None:
        return AbortNext(name=name, reason="Removed"), None
    if spec.state is DesiredRun.STOPPED:
        return AbortNext(name=name, reason="StoppedByUser"), None
    if new.spec_hash != spec_hash(spec):
        return AbortNext(name=name, reason="Superseded"), None
    if obs.failure is not None and obs.failure.pid == new.pid:  # it refused the probe's key
        return AbortNext(name=name, reason="RolloutFailed", message=obs.failure.message), None
    if obs.process is None or obs.next_ready:
        return Promote(name=name), None
    own = policy.for_instance(spec)
    if obs.consecutive_failures >= own.failure_threshold:
        return Stop(name=name, reason="LivenessFailed", crash=True), None
    deadline = new.started_at + progress_deadline(spec, policy)
    startup = new.started_at + own.startup_timeout_secs
    if now >= deadline:
        message = (
            f"new process pid {new.pid} was not Ready within "
            f"progress_deadline_secs ({deadline - new.started_at:g}s)"
        )
        return AbortNext(name=name, reason="ProgressDeadlineExceeded", message=message), None
    if now >= startup:
        message = (
            f"new process pid {new.pid} was not Ready within "
            f"startup_timeout_secs ({own.startup_timeout_secs:g}s)"
        )
        return AbortNext(name=name, reason="RolloutFailed", message=message), None
    return None, min(deadline, startup)


def rollout_progress(spec: InstanceSpec | None, obs: ObservedInstance | None) -> Progress | None:
    """`Progressing` while a surge rollout runs or after it failed; None otherwise (the
    instance's phase then says whether it progresses)."""
    if spec is None or obs is None or obs.process is None:
        return None
    current = obs.process
    wanted = spec_hash(spec)
    new = obs.next
    if obs.busy is Busy.SWITCHING:
        message = f"traffic switched to pid {current.pid}; the old process is draining"
        return Progress(status=True, reason="RollingUpdate", message=message)
    if new is not None and new.spec_hash == wanted and obs.busy is not Busy.ABORTING:
        state = "is Ready" if obs.next_ready else "is starting"
        message = f"new process pid {new.pid} {state}; pid {current.pid} keeps serving"
        return Progress(status=True, reason="RollingUpdate", message=message)
    if obs.busy is Busy.STARTING:
        message = f"starting a new process beside pid {current.pid}"
        return Progress(status=True, reason="RollingUpdate", message=message)
    if current.spec_hash == wanted or spec.state is DesiredRun.STOPPED:
        return None
    failure = obs.rollout_failure
    if failure is not None and failure.spec_hash == wanted and new is None:
        message = f"{failure.message}; pid {current.pid} keeps serving the previous spec"
        return Progress(status=False, reason=failure.reason, message=message)
    if new is not None or surges(spec, obs):
        message = f"rolling out a new spec; pid {current.pid} keeps serving"
        return Progress(status=True, reason="RollingUpdate", message=message)
    return None
