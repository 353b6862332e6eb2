"""The planner is total and pure: a table over desired x observed, with numbers for time."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from tei_reconciler.desired.spec import DesiredRun, DesiredState, InstanceSpec, Rollout, spec_hash
from tei_reconciler.planner.backoff import CrashLoop
from tei_reconciler.planner.observed import Busy, Failure, ObservedInstance, ProcessView
from tei_reconciler.planner.plan import Forget, Start, StartNext, Stop, assess, plan, plan_one
from tei_reconciler.planner.policy import Policy

POLICY = Policy(
    startup_timeout_secs=60,
    failure_threshold=3,
    health_interval_secs=10,
    health_timeout_secs=5,
    max_instances=4,
)
NOW = 1000.0
SPEC = InstanceSpec(name="a", model_id="hash/384")
STOPPED = msgspec.structs.replace(SPEC, state=DesiredRun.STOPPED)
CHANGED = msgspec.structs.replace(SPEC, max_batch_tokens=1024)
BUMPED = msgspec.structs.replace(SPEC, restarted_at=datetime(2026, 1, 1, tzinfo=UTC))
RECREATE = msgspec.structs.replace(CHANGED, rollout=Rollout.RECREATE)
PINNED = msgspec.structs.replace(CHANGED, port=8080)
H = spec_hash(SPEC)


def proc(hash_: str = H, started_at: float = NOW - 10) -> ProcessView:
    return ProcessView(pid=42, spec_hash=hash_, started_at=started_at)


def obs(**fields: object) -> ObservedInstance:
    return ObservedInstance(name="a", **fields)  # type: ignore[arg-type]


RUNNING_OK = obs(process=proc(), startup_ok=True, ready=True)

# (case, desired spec, observed, expected action)
TABLE = [
    ("absent and unknown: nothing", None, None, None),
    ("absent, no process: forget the status", None, obs(), Forget(name="a")),
    (
        "absent with a process: stop and forget",
        None,
        RUNNING_OK,
        Stop(name="a", reason="Removed", forget=True),
    ),
    ("new running instance: start", SPEC, None, Start(name="a", spec=SPEC)),
    ("running, no process: start", SPEC, obs(), Start(name="a", spec=SPEC)),
    ("running and healthy: nothing", SPEC, RUNNING_OK, None),
    ("running, startup probe pending within timeout: nothing", SPEC, obs(process=proc()), None),
    (
        "startup timeout passed: stop as a crash",
        SPEC,
        obs(process=proc(started_at=NOW - 61)),
        Stop(name="a", reason="StartupTimeout", crash=True),
    ),
    (
        "liveness failed threshold times: stop as a crash",
        SPEC,
        obs(process=proc(), startup_ok=True, consecutive_failures=3),
        Stop(name="a", reason="LivenessFailed", crash=True),
    ),
    (
        "liveness failed below threshold: nothing",
        SPEC,
        obs(process=proc(), startup_ok=True, consecutive_failures=2),
        None,
    ),
    (
        "spec changed: start the new process beside the old one",
        CHANGED,
        RUNNING_OK,
        StartNext(name="a", spec=CHANGED),
    ),
    (
        "restarted_at changed: start the new process beside the old one",
        BUMPED,
        RUNNING_OK,
        StartNext(name="a", spec=BUMPED),
    ),
    (
        "spec changed, rollout recreate: stop to replace",
        RECREATE,
        RUNNING_OK,
        Stop(name="a", reason="SpecChanged"),
    ),
    (
        "spec changed, port pinned: stop to replace (two processes cannot share the port)",
        PINNED,
        obs(process=proc(), startup_ok=True, ready=True),
        Stop(name="a", reason="SpecChanged"),
    ),
    (
        "spec changed while the old process is not Ready: stop to replace",
        CHANGED,
        obs(process=proc()),
        Stop(name="a", reason="SpecChanged"),
    ),
    (
        "desired stopped with a process: stop",
        STOPPED,
        RUNNING_OK,
        Stop(name="a", reason="StoppedByUser"),
    ),
    ("desired stopped without a process: nothing, ever", STOPPED, obs(), None),
    (
        "desired stopped after crashes: nothing",
        STOPPED,
        obs(crash=CrashLoop(crashes=3, delay=40, until=NOW - 1, spec_hash=H)),
        None,
    ),
    (
        "in crash backoff: wait",
        SPEC,
        obs(crash=CrashLoop(crashes=1, delay=10, until=NOW + 5, spec_hash=H)),
        None,
    ),
    (
        "crash backoff over: start",
        SPEC,
        obs(crash=CrashLoop(crashes=1, delay=10, until=NOW - 0.1, spec_hash=H)),
        Start(name="a", spec=SPEC),
    ),
    (
        "backoff of an older spec does not delay the new one",
        CHANGED,
        obs(crash=CrashLoop(crashes=5, delay=160, until=NOW + 100, spec_hash=H)),
        Start(name="a", spec=CHANGED),
    ),
    (
        "failed start, retry not due: wait",
        SPEC,
        obs(failure=Failure(reason="GpuNotFound", message="", retry_at=NOW + 9, spec_hash=H)),
        None,
    ),
    (
        "failed start, spec fixed: start at once",
        CHANGED,
        obs(failure=Failure(reason="GpuNotFound", message="", retry_at=NOW + 9, spec_hash=H)),
        Start(name="a", spec=CHANGED),
    ),
    (
        "a process that refused the probe's key: stop it (it can never serve)",
        SPEC,
        obs(
            process=proc(),
            failure=Failure(
                reason="Unauthenticated", message="", retry_at=NOW + 9, spec_hash=H, pid=42
            ),
        ),
        Stop(name="a", reason="Unauthenticated"),
    ),
    (
        "a failure of an earlier process condemns not this one",
        SPEC,
        obs(
            process=proc(),
            startup_ok=True,
            ready=True,
            failure=Failure(
                reason="Unauthenticated", message="", retry_at=NOW + 9, spec_hash=H, pid=41
            ),
        ),
        None,
    ),
    ("busy starting: no second action", SPEC, obs(busy=Busy.STARTING), None),
    (
        "busy stopping, removed: no second action",
        None,
        obs(process=proc(), busy=Busy.STOPPING),
        None,
    ),
    (
        "busy stopping, desired running: no start over it",
        SPEC,
        obs(process=proc(), busy=Busy.STOPPING),
        None,
    ),
]


@pytest.mark.parametrize(("case", "spec", "observed", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_plan_one_picks_the_action_the_table_names(
    case: str, spec: InstanceSpec | None, observed: ObservedInstance | None, expected: object
) -> None:
    action, _ = plan_one(spec, observed, NOW, POLICY)
    assert action == expected, case


@pytest.mark.parametrize(("case", "spec", "observed", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_every_table_row_has_a_phase(
    case: str, spec: InstanceSpec | None, observed: ObservedInstance | None, expected: object
) -> None:
    verdict = assess(spec, observed, NOW, POLICY)
    assert verdict.phase in {
        "Pending",
        "Starting",
        "Running",
        "Stopping",
        "Stopped",
        "CrashLoopBackOff",
        "Failed",
    }


def test_a_user_stopped_instance_is_never_restarted_however_long_we_wait() -> None:
    desired = DesiredState(instances={"a": STOPPED})
    for now in (NOW, NOW + 3600, NOW + 86400 * 30):
        actions, requeue = plan(desired, {"a": obs()}, now, policy=POLICY)
        assert actions == []
        assert requeue is None
        assert assess(STOPPED, obs(), now, POLICY).phase == "Stopped"


def test_backoff_is_visible_as_crash_loop_and_requeues_at_its_end() -> None:
    observed = obs(crash=CrashLoop(crashes=2, delay=20, until=NOW + 7, spec_hash=H))
    actions, requeue = plan(
        DesiredState(instances={"a": SPEC}), {"a": observed}, NOW, policy=POLICY
    )
    assert actions == []
    assert requeue == NOW + 7
    verdict = assess(SPEC, observed, NOW, POLICY)
    assert verdict.phase == "CrashLoopBackOff"
    assert "20s" in verdict.message


def test_a_starting_process_requeues_at_its_startup_deadline() -> None:
    _, requeue = plan(
        DesiredState(instances={"a": SPEC}),
        {"a": obs(process=proc(started_at=NOW - 10))},
        NOW,
        policy=POLICY,
    )
    assert requeue == NOW - 10 + 60


def test_an_instance_startup_timeout_overrides_the_manager_default() -> None:
    quick = msgspec.structs.replace(SPEC, startup_timeout_secs=5)
    observed = obs(process=proc(hash_=spec_hash(quick), started_at=NOW - 6))
    action, _ = plan_one(quick, observed, NOW, POLICY)
    assert action == Stop(name="a", reason="StartupTimeout", crash=True)


def test_starts_beyond_max_instances_wait_for_a_free_slot() -> None:
    specs = {f"i{n}": InstanceSpec(name=f"i{n}", model_id="hash/8") for n in range(6)}
    actions, _ = plan(DesiredState(instances=specs), {}, NOW, policy=POLICY)
    assert [a.name for a in actions] == ["i0", "i1", "i2", "i3"]


def test_failed_phase_names_the_reason() -> None:
    failure = Failure(
        reason="PortInUse", message="port 8080 is held by pid 7", retry_at=NOW + 60, spec_hash=H
    )
    verdict = assess(SPEC, obs(failure=failure), NOW, POLICY)
    assert (verdict.phase, verdict.reason) == ("Failed", "PortInUse")
    assert "pid 7" in verdict.message


def test_plan_does_not_depend_on_dict_order() -> None:
    specs = {n: InstanceSpec(name=n, model_id="hash/8") for n in ("b", "a", "c")}
    actions, _ = plan(DesiredState(instances=specs), {}, NOW, policy=POLICY)
    assert [a.name for a in actions] == ["a", "b", "c"]


def test_plan_at_scale_is_total_over_ten_thousand_instances() -> None:
    specs = {f"i{n}": InstanceSpec(name=f"i{n}", model_id="hash/8") for n in range(10_000)}
    actions, _ = plan(
        DesiredState(instances=specs),
        {},
        NOW,
        policy=msgspec.structs.replace(POLICY, max_instances=20_000),
    )
    assert len(actions) == 10_000
