"""Surge rollouts are planner outcomes: a table over the current and the new process of one
instance, with numbers for time (no process, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from tei_reconciler.desired.spec import DesiredRun, DesiredState, InstanceSpec, spec_hash
from tei_reconciler.planner.actions import AbortNext, Action, Promote, StartNext, Stop
from tei_reconciler.planner.backoff import CrashLoop
from tei_reconciler.planner.model_status import ModelGate
from tei_reconciler.planner.observed import (
    Busy,
    Failure,
    ObservedInstance,
    ProcessView,
    RolloutFailure,
)
from tei_reconciler.planner.plan import assess, plan, plan_one
from tei_reconciler.planner.policy import Policy

POLICY = Policy(
    startup_timeout_secs=60,
    failure_threshold=3,
    health_interval_secs=10,
    health_timeout_secs=5,
    max_instances=1,
)
NOW = 1000.0
OLD = InstanceSpec(name="a", model_id="hash/384")
NEW = msgspec.structs.replace(OLD, max_batch_tokens=1024)
NEWER = msgspec.structs.replace(OLD, max_batch_tokens=2048)
BUMPED = msgspec.structs.replace(OLD, restarted_at=datetime(2026, 1, 1, tzinfo=UTC))
H_OLD, H_NEW = spec_hash(OLD), spec_hash(NEW)


def proc(hash_: str, *, pid: int, started_at: float, adopted: bool = False) -> ProcessView:
    return ProcessView(pid=pid, spec_hash=hash_, started_at=started_at, adopted=adopted)


CURRENT = proc(H_OLD, pid=10, started_at=NOW - 500)
STARTING_NEW = proc(H_NEW, pid=11, started_at=NOW - 5)


def obs(**fields: object) -> ObservedInstance:
    """The old process Ready and serving, plus `fields`."""
    base: dict[str, object] = {"process": CURRENT, "startup_ok": True, "ready": True}
    return ObservedInstance(name="a", **{**base, **fields})  # type: ignore[arg-type]


FAILED_NEW = RolloutFailure(reason="RolloutFailed", message="pid 11 exited", spec_hash=H_NEW)
BACKING_OFF = CrashLoop(crashes=1, delay=10, until=NOW + 7, spec_hash=H_NEW)

# (case, desired spec, observed, expected action, requeue)
TABLE: list[tuple[str, InstanceSpec | None, ObservedInstance, Action | None, float | None]] = [
    (
        "a changed spec starts the new process beside the old",
        NEW,
        obs(),
        StartNext(name="a", spec=NEW),
        None,
    ),
    (
        "a restarted_at bump rolls the same way",
        BUMPED,
        obs(),
        StartNext(name="a", spec=BUMPED),
        None,
    ),
    (
        "old Ready + new starting: wait for the new one, until its deadline",
        NEW,
        obs(next=STARTING_NEW),
        None,
        STARTING_NEW.started_at + 60,
    ),
    (
        "the new process is Ready: switch",
        NEW,
        obs(next=STARTING_NEW, next_ready=True),
        Promote(name="a"),
        None,
    ),
    (
        "the old process died while the new one starts: the new one takes over at once",
        NEW,
        ObservedInstance(name="a", next=STARTING_NEW),
        Promote(name="a"),
        None,
    ),
    (
        "the new process crashed: the old one keeps serving while the backoff runs",
        NEW,
        obs(crash=BACKING_OFF, rollout_failure=FAILED_NEW),
        None,
        NOW + 7,
    ),
    (
        "the backoff of a failed rollout is over: try again",
        NEW,
        obs(crash=msgspec.structs.replace(BACKING_OFF, until=NOW - 1), rollout_failure=FAILED_NEW),
        StartNext(name="a", spec=NEW),
        None,
    ),
    (
        "the new process could not even start: retried when the failure says",
        NEW,
        obs(
            failure=Failure(
                reason="PortAllocationFailed", message="", retry_at=NOW + 3, spec_hash=H_NEW
            )
        ),
        None,
        NOW + 3,
    ),
    (
        "progress deadline passed: stop the new process, the rollout failed",
        msgspec.structs.replace(NEW, progress_deadline_secs=4),
        obs(next=STARTING_NEW),
        AbortNext(
            name="a",
            reason="ProgressDeadlineExceeded",
            message="new process pid 11 was not Ready within progress_deadline_secs (4s)",
        ),
        None,
    ),
    (
        "the startup timeout is shorter than the progress deadline: the rollout failed",
        msgspec.structs.replace(NEW, progress_deadline_secs=600, startup_timeout_secs=3),
        obs(
            next=proc(
                spec_hash(msgspec.structs.replace(NEW, startup_timeout_secs=3)),
                pid=11,
                started_at=NOW - 5,
            )
        ),
        AbortNext(
            name="a",
            reason="RolloutFailed",
            message="new process pid 11 was not Ready within startup_timeout_secs (3s)",
        ),
        None,
    ),
    (
        "spec edited mid-rollout: the obsolete new process stops",
        NEWER,
        obs(next=STARTING_NEW),
        AbortNext(name="a", reason="Superseded"),
        None,
    ),
    (
        "spec edited after a failed rollout: the latest spec starts at once",
        NEWER,
        obs(crash=BACKING_OFF, rollout_failure=FAILED_NEW),
        StartNext(name="a", spec=NEWER),
        None,
    ),
    (
        "instance stopped mid-rollout: the new process stops first",
        msgspec.structs.replace(NEW, state=DesiredRun.STOPPED),
        obs(next=STARTING_NEW),
        AbortNext(name="a", reason="StoppedByUser"),
        None,
    ),
    (
        "instance deleted mid-rollout: the new process stops first",
        None,
        obs(next=STARTING_NEW),
        AbortNext(name="a", reason="Removed"),
        None,
    ),
    (
        "reconciler restarted mid-rollout, both adopted: wait for the new one's probe",
        NEW,
        obs(
            process=proc(H_OLD, pid=10, started_at=NOW - 1, adopted=True),
            next=proc(H_NEW, pid=11, started_at=NOW - 1, adopted=True),
        ),
        None,
        NOW - 1 + 60,
    ),
    (
        "reconciler restarted mid-rollout, the adopted new process answers: switch",
        NEW,
        obs(next=proc(H_NEW, pid=11, started_at=NOW - 1, adopted=True), next_ready=True),
        Promote(name="a"),
        None,
    ),
    (
        "switching: the drain runs, nothing else",
        NEW,
        obs(process=proc(H_NEW, pid=11, started_at=NOW - 5), busy=Busy.SWITCHING),
        None,
        None,
    ),
    (
        "the old process fails its liveness probes mid-rollout: it is replaced as a crash",
        NEW,
        obs(next=STARTING_NEW, ready=False, consecutive_failures=3),
        Stop(name="a", reason="LivenessFailed", crash=True),
        None,
    ),
    (
        "the new spec's model is not on disk yet: the old process serves meanwhile",
        NEW,
        obs(model=ModelGate(reason="Downloading", message="fetching")),
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "observed", "action", "requeue"), TABLE, ids=[t[0] for t in TABLE]
)
def test_a_rollout_step_is_the_action_the_table_names(
    case: str,
    spec: InstanceSpec | None,
    observed: ObservedInstance,
    action: Action | None,
    requeue: float | None,
) -> None:
    assert plan_one(spec, observed, NOW, POLICY) == (action, requeue), case


@pytest.mark.parametrize(
    ("case", "spec", "observed", "action", "requeue"), TABLE, ids=[t[0] for t in TABLE]
)
def test_no_rollout_step_leaves_the_instance_without_a_serving_process(
    case: str,
    spec: InstanceSpec | None,
    observed: ObservedInstance,
    action: Action | None,
    requeue: float | None,
) -> None:
    """Only a removal, a stop by the user or a dead process takes the current process out of
    service; every other rollout step keeps it Running."""
    verdict = assess(spec, observed, NOW, POLICY)
    if spec is None or spec.state is DesiredRun.STOPPED:
        assert verdict.phase == "Stopping"
    elif observed.process is not None and observed.ready:
        assert (verdict.phase, verdict.reason) == ("Running", "Healthy"), case


def test_a_rollout_in_progress_says_so_and_names_both_processes() -> None:
    verdict = assess(NEW, obs(next=STARTING_NEW), NOW, POLICY)
    assert verdict.rollout is not None
    assert (verdict.rollout.status, verdict.rollout.reason) == (True, "RollingUpdate")
    assert "pid 11 is starting" in verdict.rollout.message
    assert "pid 10 keeps serving" in verdict.rollout.message


def test_a_failed_rollout_is_not_progressing_and_says_why() -> None:
    verdict = assess(NEW, obs(crash=BACKING_OFF, rollout_failure=FAILED_NEW), NOW, POLICY)
    assert verdict.rollout is not None
    assert (verdict.rollout.status, verdict.rollout.reason) == (False, "RolloutFailed")
    assert "pid 11 exited" in verdict.rollout.message


def test_a_failure_of_an_older_spec_says_nothing_about_the_latest_rollout() -> None:
    verdict = assess(NEWER, obs(rollout_failure=FAILED_NEW), NOW, POLICY)
    assert verdict.rollout is not None
    assert verdict.rollout.status is True


def test_a_finished_rollout_leaves_no_rollout_condition() -> None:
    done = ObservedInstance(
        name="a", process=proc(H_NEW, pid=11, started_at=NOW - 5), startup_ok=True, ready=True
    )
    assert assess(NEW, done, NOW, POLICY).rollout is None


def test_recreate_shows_the_old_process_stopping() -> None:
    recreate = msgspec.structs.replace(NEW, rollout="recreate")
    verdict = assess(recreate, obs(), NOW, POLICY)
    assert verdict.phase == "Stopping"
    assert verdict.rollout is None


def test_a_surge_takes_no_start_slot_from_other_instances() -> None:
    """max_instances counts instances' processes; a rollout's second process is temporary."""
    desired = DesiredState(instances={"a": NEW})
    actions, _ = plan(desired, {"a": obs()}, NOW, policy=POLICY)
    assert actions == [StartNext(name="a", spec=NEW)]


def test_a_rollout_is_driven_to_its_end_by_passes_alone() -> None:
    """Old Ready -> new started -> new Ready -> switched -> old gone: each pass's observation
    leads to the next step, and the instance is Running at every one of them."""
    steps = [
        (obs(), StartNext(name="a", spec=NEW)),
        (obs(busy=Busy.STARTING), None),
        (obs(next=STARTING_NEW), None),
        (obs(next=STARTING_NEW, next_ready=True), Promote(name="a")),
        (obs(process=STARTING_NEW, busy=Busy.SWITCHING), None),
        (obs(process=STARTING_NEW), None),
    ]
    for observed, expected in steps:
        action, _ = plan_one(NEW, observed, NOW, POLICY)
        assert action == expected
        assert assess(NEW, observed, NOW, POLICY).phase == "Running"
    assert assess(NEW, steps[-1][0], NOW, POLICY).rollout is None


def test_a_dry_run_says_what_each_rollout_step_does() -> None:
    assert "beside the serving one" in StartNext(name="a", spec=NEW).reason
    assert "traffic switches" in Promote(name="a").reason
    assert AbortNext(name="a", reason="Superseded").reason == "Superseded"
