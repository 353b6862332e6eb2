"""How the controller's runtimes turn into published status and routing.

After every pass the planner's verdict on each instance (`assess`) and its runtime become the
immutable `InstanceStatus` the API reads and the `Endpoint` the router reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from tei_reconciler import metrics
from tei_reconciler.control.runtime import Placement, ProcessRecord, Role, Runtime
from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.plan import Assessment, assess
from tei_reconciler.planner.policy import Policy
from tei_reconciler.planner.status import Condition, InstanceStatus, ProcessStatus
from tei_reconciler.routing import Backend, Endpoint, RoutingTable
from tei_reconciler.store import StatusStore


def _transition_time(
    previous: InstanceStatus | None, type_: str, status: str, wall: float
) -> float:
    """When a condition last changed: kept from `previous` while its status is unchanged."""
    if previous is not None:
        for old in previous.conditions:
            if old.type == type_ and old.status == status:
                return old.last_transition_time
    return wall


def _flag(value: bool) -> str:
    return "True" if value else "False"


def _process_state(role: Role, record: ProcessRecord) -> str:
    if role is Role.OLD:
        return "Draining"
    if not record.startup_ok:
        return "Starting"
    return "Ready" if record.ready else "Unhealthy"


def process_statuses(rt: Runtime) -> tuple[ProcessStatus, ...]:
    """Every live process of the instance, current first."""
    return tuple(
        ProcessStatus(
            role=role.value,
            pid=record.pid,
            port=record.placement.port,
            prometheus_port=record.placement.prometheus_port,
            spec_hash=record.spec_hash,
            state=_process_state(role, record),
            created_at=record.created_at,
            ready_since=record.ready_since if record.ready else None,
            adopted=record.handle.adopted,
        )
        for role, record in rt.processes()
    )


def build_status(
    name: str,
    spec: InstanceSpec | None,
    rt: Runtime | None,
    verdict: Assessment,
    previous: InstanceStatus | None,
    *,
    now: float,
    wall: float,
    spec_errors: tuple[str, ...],
) -> InstanceStatus:
    phase = verdict.phase
    shown_spec = (
        spec
        or (rt.spec if rt is not None else None)
        or (previous.spec if previous is not None else InstanceSpec(name=name, model_id=""))
    )
    current = rt.current if rt is not None else None
    ready = current is not None and phase is Phase.RUNNING and current.ready
    progressing = phase in (Phase.PENDING, Phase.STARTING, Phase.STOPPING)
    progress_reason, progress_message = verdict.reason, verdict.message
    if verdict.rollout is not None:
        progressing = verdict.rollout.status
        progress_reason, progress_message = verdict.rollout.reason, verdict.rollout.message
    failures = current.consecutive_failures if current is not None else 0
    degraded = phase in (Phase.CRASH_LOOP_BACK_OFF, Phase.FAILED) or failures > 0

    def condition(type_: str, status: bool, reason: str, message: str) -> Condition:
        value = _flag(status)
        since = _transition_time(previous, type_, value, wall)
        return Condition(
            type=type_, status=value, reason=reason, message=message, last_transition_time=since
        )

    conditions = (
        condition("Ready", ready, verdict.reason, verdict.message),
        condition("Progressing", progressing, progress_reason, progress_message),
        condition(
            "Degraded",
            degraded,
            verdict.reason if degraded else "Healthy",
            verdict.message if degraded else "",
        ),
        condition(
            "SpecValid",
            not spec_errors,
            "InvalidSpec" if spec_errors else "Valid",
            spec_errors[0] if spec_errors else "",
        ),
    )
    crash_until = None
    if rt is not None and phase is Phase.CRASH_LOOP_BACK_OFF and rt.crash.until is not None:
        crash_until = wall + (rt.crash.until - now)
    if rt is not None and phase is Phase.FAILED and rt.failure is not None:
        crash_until = wall + (rt.failure.retry_at - now)
    placed = rt.placement if rt is not None else Placement()
    probes = tuple(current.probes) if current is not None else rt.last_probes if rt else ()
    return InstanceStatus(
        name=name,
        spec=shown_spec,
        phase=phase,
        reason=verdict.reason,
        message=verdict.message,
        pid=current.pid if current is not None else None,
        port=placed.port if placed.port is not None else shown_spec.port,
        prometheus_port=placed.prometheus_port if rt is not None else shown_spec.prometheus_port,
        gpu_id=placed.gpu_id,
        created_at=current.created_at if current is not None else None,
        ready_since=current.ready_since if ready and current is not None else None,
        restarts=rt.restarts if rt is not None else 0,
        health_check_failures=failures,
        last_health_check=probes[-1].at if probes else None,
        last_exit=rt.last_exit if rt is not None else None,
        backoff_until=crash_until,
        conditions=conditions,
        probes=probes,
        spec_hash=current.spec_hash if current is not None else None,
        processes=process_statuses(rt) if rt is not None else (),
        rollout_failure=rt.rollout_failure if rt is not None else None,
    )


def endpoint_of(status: InstanceStatus, host: str, rt: Runtime | None) -> Endpoint | None:
    """The routing entry of an instance; None while it has no port at all. The old process
    of a rollout stays in it as draining until it is stopped (its calls finish there)."""
    if status.port is None:
        return None
    old = rt.old if rt is not None else None
    draining: tuple[Backend, ...] = ()
    if old is not None and old.placement.port is not None:
        draining = (Backend(host=host, port=old.placement.port, generation=old.generation),)
    return Endpoint(
        name=status.name,
        model_id=status.spec.model_id,
        host=host,
        port=status.port,
        ready=status.ready,
        phase=status.phase,
        generation=_generation(rt),
        draining=draining,
        api_key=rt.handle.api_key if rt is not None and rt.handle is not None else None,
    )


def _generation(rt: Runtime | None) -> int:
    """The generation routing knows the instance's current process by (its last one's when
    none runs)."""
    if rt is None:
        return 0
    return rt.current.generation if rt.current is not None else rt.generation


def _unknown_desire(rt: Runtime) -> Assessment | None:
    """The verdict on a process while no valid state file has been read (an invalid file at
    boot): it is kept, probed and routed as found, never shown as being removed."""
    current = rt.current
    if current is None or rt.busy is not None:
        return None
    if not current.startup_ok:
        return Assessment(
            phase=Phase.STARTING,
            reason="SpecUnknown",
            message="no valid state file read yet; waiting for the first healthy probe",
        )
    return Assessment(
        phase=Phase.RUNNING,
        reason="Healthy" if current.ready else "Unhealthy",
        message="no valid state file read yet; the process is kept as found",
    )


def publish(
    desired: Mapping[str, InstanceSpec] | None,
    runtimes: Mapping[str, Runtime],
    store: StatusStore,
    table: RoutingTable,
    *,
    policy: Policy,
    host: str,
    now: float,
    wall: float,
) -> None:
    """Write every instance's status, the routing table and the phase gauge. `desired` is
    None while no valid state file has been read: the processes found are kept as they are.
    An instance neither desired nor tracked is gone from the store too (one that never had a
    process, such as a stopped one, has no runtime for a Forget to drop)."""
    counts = dict.fromkeys(Phase, 0)
    endpoints = []
    rows = []
    rollouts = []
    shown = (desired or {}).keys() | runtimes.keys()
    for gone in {s.name for s in store.all()} - shown:
        store.forget(gone)
    for name in sorted(shown):
        spec = desired.get(name) if desired is not None else None
        rt = runtimes.get(name)
        verdict = None if desired is not None or rt is None else _unknown_desire(rt)
        if verdict is None:
            verdict = assess(spec, rt.observe() if rt is not None else None, now, policy)
        status = build_status(
            name,
            spec,
            rt,
            verdict,
            store.get(name),
            now=now,
            wall=wall,
            spec_errors=store.spec_errors,
        )
        store.put(status)
        counts[status.phase] += 1
        rows.append((name, status.spec.model_id, status.phase.value, status.ready))
        if verdict.rollout is not None:
            state = "rolling" if verdict.rollout.status else "failed"
            rollouts.append((name, status.spec.model_id, state))
        endpoint = endpoint_of(status, host, rt)
        if endpoint is not None:
            endpoints.append(endpoint)
    for phase, count in counts.items():
        metrics.INSTANCES.labels(phase.value).set(count)
    metrics.set_instances(rows, rollouts)
    table.update(endpoints)
    store.first_pass_done = True
