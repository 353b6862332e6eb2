"""Status-store records as API bodies.

An instance is shown from two sources: its desired spec (the state file) and what the
controller observed (the status store). One the controller has not observed yet is `Pending`;
one that left the file but still has a process shows its observed spec until it is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import msgspec

from tei_reconciler.api.schemas import (
    ConditionOut,
    EventOut,
    ExitOut,
    InstanceOut,
    ModelCheckOut,
    ModelMetadataOut,
    ModelOut,
    ProcessOut,
    ProgressOut,
    RolloutOut,
)
from tei_reconciler.desired.spec import DesiredRun, InstanceSpec, spec_hash
from tei_reconciler.planner.model_status import ModelState, ModelStatus
from tei_reconciler.planner.phase import ANCHOR_STATUS, Phase
from tei_reconciler.planner.status import (
    Condition,
    Event,
    ExitInfo,
    InstanceStatus,
    ProcessStatus,
    exit_summary,
    signal_name,
)


def ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _gpu_id(spec: InstanceSpec) -> int | None:
    """tei-manager's `gpu_id` is one index; a list, "all" or "none" has no such value."""
    gpu = spec.gpu
    if isinstance(gpu, int):
        return gpu
    if isinstance(gpu, tuple) and len(gpu) == 1:
        return gpu[0]
    return None


def instance_out(
    spec: InstanceSpec | None,
    status: InstanceStatus | None,
    now: float,
    routed_by: str | None = None,
) -> InstanceOut:
    """The instance body; `now` is epoch seconds (for `uptime_secs`); `routed_by` is the data
    plane that sends new calls to it now, if any does."""
    shown = spec if spec is not None else status.spec if status is not None else None
    if shown is None:
        raise ValueError("an instance needs a spec or a status")
    if status is not None:
        phase = status.phase
    elif shown.state is DesiredRun.STOPPED:
        phase = Phase.STOPPED  # not observed yet, but no process is, or will be, started
    else:
        phase = Phase.PENDING
    running = status is not None and status.pid is not None and status.created_at is not None
    uptime = (
        int(max(now - status.created_at, 0)) if running and status and status.created_at else None
    )
    return InstanceOut(
        name=shown.name,
        model_id=shown.model_id,
        port=(status.port if status and status.port is not None else shown.port),
        status=ANCHOR_STATUS[phase],
        pid=status.pid if status else None,
        created_at=ts(status.created_at) if status else None,
        uptime_secs=uptime,
        restarts=status.restarts if status else 0,
        health_check_failures=status.health_check_failures if status else 0,
        last_health_check=ts(status.last_health_check) if status else None,
        gpu_id=_gpu_id(shown),
        prometheus_port=(
            status.prometheus_port
            if status and status.prometheus_port is not None
            else shown.prometheus_port
        ),
        phase=phase,
        ready=status.ready if status else False,
        reason=status.reason if status else "NotObserved",
        message=status.message if status else "the controller has not acted on it yet",
        desired_state=DesiredRun.STOPPED if spec is None else shown.state,
        conditions=[
            ConditionOut(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message,
                last_transition_time=_ts(c.last_transition_time),
            )
            for c in (status.conditions if status else ())
        ],
        spec=msgspec.to_builtins(shown),
        last_exit=exit_out(status.last_exit) if status and status.last_exit else None,
        backoff_until=ts(status.backoff_until) if status else None,
        events=f"/instances/{shown.name}/events",
        processes=[process_out(p) for p in (status.processes if status else ())],
        rollout=rollout_out(spec, status, shown),
        routed_by=routed_by,
    )


def process_out(process: ProcessStatus) -> ProcessOut:
    return ProcessOut(
        role=process.role,  # type: ignore[arg-type]
        pid=process.pid,
        port=process.port,
        prometheus_port=process.prometheus_port,
        spec_hash=process.spec_hash,
        state=process.state,  # type: ignore[arg-type]
        created_at=_ts(process.created_at),
        ready_since=ts(process.ready_since),
        adopted=process.adopted,
    )


def _condition(status: InstanceStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def rollout_out(
    spec: InstanceSpec | None, status: InstanceStatus | None, shown: InstanceSpec
) -> RolloutOut:
    """Where the instance stands against its desired spec (`spec`, else the one observed)."""
    wanted = spec_hash(shown)
    current = status.spec_hash if status is not None else None
    processes = status.processes if status is not None else ()
    failure = status.rollout_failure if status is not None else None
    attempts = failure.attempts if failure is not None and failure.spec_hash == wanted else 0

    def out(state: str, reason: str, message: str) -> RolloutOut:
        return RolloutOut(
            strategy=shown.rollout,
            state=state,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            spec_hash=wanted,
            current_spec_hash=current,
            attempts=attempts,
        )

    if spec is None:
        return out("progressing", "Removed", "removed from the state file; stopping")
    if spec.state is DesiredRun.STOPPED:
        if processes:
            return out("progressing", "Stopping", 'state = "stopped"; stopping its process')
        return out("complete", "Stopped", 'state = "stopped": no process runs')
    if status is None:
        return out("progressing", "NotObserved", "the controller has not acted on it yet")
    retrying = any(p.role == "next" and p.spec_hash == wanted for p in processes)
    if attempts and current != wanted and not retrying:
        return out("failed", failure.reason if failure else "", failure.message if failure else "")
    if status.phase is Phase.FAILED:
        return out("failed", status.reason, status.message)
    if current == wanted and status.ready and all(p.role == "current" for p in processes):
        return out("complete", "Complete", f"pid {status.pid} serves spec {wanted}")
    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.status == "True" and progressing.message:
        return out("progressing", progressing.reason, progressing.message)
    detail = ": ".join(p for p in (status.reason, status.message) if p)
    return out("progressing", status.phase.value, detail or status.phase.value)


def model_path(model_id: str) -> str:
    """`/models/<id>` with the id percent-encoded as one segment, as tei-manager expects."""
    return "/models/" + quote(model_id, safe="")


def model_out(status: ModelStatus, checks: Sequence[ModelCheckOut] = ()) -> ModelOut:
    progress = status.progress
    return ModelOut(
        model_id=status.model_id,
        status=status.state.value,
        downloaded=status.state is ModelState.DOWNLOADED,
        added_at=ts(status.added_at),
        cache_path=status.cache_path,
        cache_size_bytes=status.cache_size_bytes,
        metadata=(
            msgspec.convert(msgspec.to_builtins(status.metadata), ModelMetadataOut)
            if status.metadata is not None
            else None
        ),
        revision=status.revision,
        commit=status.commit,
        local=status.local,
        declared=status.declared,
        keep=status.keep,
        used_by=list(status.used_by),
        progress=(
            ProgressOut(
                done_bytes=progress.done_bytes,
                total_bytes=progress.total_bytes,
                percent=round(progress.percent, 1),
                files_done=progress.files_done,
                files_total=progress.files_total,
            )
            if progress is not None
            else None
        ),
        reason=status.reason,
        message=status.message,
        retry_at=ts(status.retry_at),
        failures=status.failures,
        checks=list(checks),
        events=model_path(status.model_id) + "/events",
    )


def exit_out(exit_: ExitInfo) -> ExitOut:
    return ExitOut(
        code=exit_.code,
        signal=exit_.signal,
        signal_name=signal_name(exit_.signal) if exit_.signal is not None else None,
        at=_ts(exit_.at),
        reason=exit_.reason,
        message=exit_summary(exit_),
        last_lines=list(exit_.last_lines),
    )


def event_out(event: Event) -> EventOut:
    return EventOut(
        instance=event.instance,
        model=event.model,
        type=event.type,
        reason=event.reason,
        message=event.message,
        count=event.count,
        first_time=_ts(event.first_time),
        last_time=_ts(event.last_time),
    )
