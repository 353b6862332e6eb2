"""The planner: desired state + observed state + now -> actions. Pure.

Level-triggered like a Kubernetes controller: it never sees events, only the two states, so a
missed trigger costs at most one resync. Every lifecycle decision lives here, which is what
makes tei-manager's races impossible by construction:

- a stopped instance has no probe and is never restarted (the planner only starts instances
  whose desired `state` is running);
- an instance with an action in flight (`busy`) gets no second action, so a start can never
  run twice and a stop can never race a start;
- the startup timeout applies to every process, however it was started;
- removal stops the process first and forgets the instance only once no process is left.

`plan()` returns the actions and when to look again; `assess()` names the phase a user sees.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from tei_reconciler.desired.spec import DesiredRun, DesiredState, InstanceSpec, spec_hash
from tei_reconciler.planner.actions import (
    AbortNext,
    AbortReason,
    Action,
    Forget,
    Promote,
    Start,
    StartNext,
    Stop,
    StopReason,
)
from tei_reconciler.planner.backoff import waiting
from tei_reconciler.planner.observed import Busy, ObservedInstance
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.policy import Policy
from tei_reconciler.planner.rollout import (
    Progress,
    plan_next,
    plan_surge,
    rollout_progress,
    surges,
)

__all__ = [
    "AbortNext",
    "AbortReason",
    "Action",
    "Assessment",
    "Forget",
    "Promote",
    "Start",
    "StartNext",
    "Stop",
    "StopReason",
    "assess",
    "plan",
    "plan_one",
]


class Assessment(msgspec.Struct, frozen=True, kw_only=True):
    """What a user sees of one instance: its phase, why, and how a rollout goes (`rollout`
    sets the `Progressing` condition while a surge rollout runs or after it failed)."""

    phase: Phase
    reason: str
    message: str
    rollout: Progress | None = None


def _soonest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def plan_one(
    spec: InstanceSpec | None, obs: ObservedInstance | None, now: float, policy: Policy
) -> tuple[Action | None, float | None]:
    """The next action for one instance and the monotonic time to look again (or None)."""
    if obs is not None and obs.busy is not None:
        return None, None  # the action in flight marks the controller dirty when it ends
    process = obs.process if obs is not None else None
    name = spec.name if spec is not None else obs.name if obs is not None else ""
    if obs is not None and obs.next is not None:
        return plan_next(spec, obs, obs.next, now, policy)
    if spec is None:
        if process is not None:
            return Stop(name=name, reason="Removed", forget=True), None
        return (Forget(name=name), None) if obs is not None else (None, None)
    if spec.state is DesiredRun.STOPPED:
        if process is not None:
            return Stop(name=name, reason="StoppedByUser"), None
        return None, None
    wanted = spec_hash(spec)
    if process is not None:
        assert obs is not None
        if process.spec_hash != wanted:
            if surges(spec, obs):
                return plan_surge(spec, obs, now)
            return Stop(name=name, reason="SpecChanged"), None
        if obs.failure is not None and obs.failure.pid == process.pid:
            return Stop(name=name, reason="Unauthenticated"), None  # it can never serve
        if not obs.startup_ok:
            deadline = process.started_at + policy.for_instance(spec).startup_timeout_secs
            if now >= deadline:
                return Stop(name=name, reason="StartupTimeout", crash=True), None
            return None, deadline
        if obs.consecutive_failures >= policy.for_instance(spec).failure_threshold:
            return Stop(name=name, reason="LivenessFailed", crash=True), None
        return None, None
    if obs is not None:
        held, until = obs.start_held(wanted, now)
        if held:
            return None, until
    return Start(name=name, spec=spec), None


def plan(
    desired: DesiredState,
    observed: Mapping[str, ObservedInstance],
    now: float,
    *,
    policy: Policy,
) -> tuple[list[Action], float | None]:
    """Actions that move the world toward `desired`, and the monotonic time at which the
    answer may change without any trigger (a backoff or startup deadline), or None.

    Starts beyond `max_instances` live processes wait (in name order) until a slot frees.
    """
    actions: list[Action] = []
    requeue: float | None = None
    live = sum(1 for o in observed.values() if o.process is not None or o.busy is Busy.STARTING)
    for name in sorted(desired.instances.keys() | observed.keys()):
        action, again = plan_one(desired.instances.get(name), observed.get(name), now, policy)
        requeue = _soonest(requeue, again)
        if isinstance(action, Start):
            if live >= policy.max_instances:
                continue
            live += 1
        if action is not None:
            actions.append(action)
    return actions, requeue


def assess(
    spec: InstanceSpec | None, obs: ObservedInstance | None, now: float, policy: Policy
) -> Assessment:
    """The phase, reason and message a user sees for one instance, and its rollout."""
    verdict = _phase(spec, obs, now)
    progress = rollout_progress(spec, obs)
    if progress is None or verdict.phase is Phase.STOPPING:
        return verdict
    return msgspec.structs.replace(verdict, rollout=progress)


def _serving(obs: ObservedInstance) -> Assessment:
    """The phase of an instance whose current process serves (or is starting to)."""
    if not obs.startup_ok:
        return Assessment(
            phase=Phase.STARTING,
            reason="StartupProbe",
            message="waiting for the first healthy probe",
        )
    if not obs.ready:
        return Assessment(
            phase=Phase.RUNNING,
            reason="Unhealthy",
            message=f"{obs.consecutive_failures} liveness probe(s) failed in a row",
        )
    return Assessment(phase=Phase.RUNNING, reason="Healthy", message="")


def _phase(spec: InstanceSpec | None, obs: ObservedInstance | None, now: float) -> Assessment:
    process = obs.process if obs is not None else None
    if obs is not None and obs.busy is Busy.STOPPING:
        reason = "Removed" if spec is None else "Stopping"
        return Assessment(phase=Phase.STOPPING, reason=reason, message="stopping the process group")
    if spec is None:
        if process is not None:
            return Assessment(phase=Phase.STOPPING, reason="Removed", message="removed from state")
        return Assessment(phase=Phase.STOPPED, reason="Removed", message="removed from state")
    if obs is not None and obs.busy is Busy.STARTING and process is None:
        return Assessment(phase=Phase.STARTING, reason="Spawning", message="starting the process")
    if process is not None:
        assert obs is not None
        if spec.state is DesiredRun.STOPPED:
            return Assessment(phase=Phase.STOPPING, reason="Stopping", message="")
        rolling = obs.next is not None or obs.busy is not None or surges(spec, obs)
        if process.spec_hash != spec_hash(spec) and not rolling:
            return Assessment(phase=Phase.STOPPING, reason="Stopping", message="")
        return _serving(obs)
    if spec.state is DesiredRun.STOPPED:
        return Assessment(phase=Phase.STOPPED, reason="StoppedByUser", message='state = "stopped"')
    if obs is not None and obs.model is not None:
        gate = obs.model
        phase = Phase.FAILED if gate.failed else Phase.PENDING
        return Assessment(phase=phase, reason=gate.reason, message=gate.message)
    wanted = spec_hash(spec)
    if obs is not None:
        failure = obs.failure
        if failure is not None and failure.spec_hash == wanted:
            return Assessment(phase=Phase.FAILED, reason=failure.reason, message=failure.message)
        if waiting(obs.crash, now=now, spec_hash=wanted):
            until = obs.crash.until or now
            return Assessment(
                phase=Phase.CRASH_LOOP_BACK_OFF,
                reason="BackOff",
                message=f"back-off {obs.crash.delay:g}s restarting failed instance "
                f"(restart in {max(0.0, until - now):.1f}s)",
            )
    return Assessment(phase=Phase.PENDING, reason="Scheduled", message="waiting to start")
