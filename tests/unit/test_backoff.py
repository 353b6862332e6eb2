"""CrashLoopBackOff arithmetic: 10 s doubling to 300 s, reset after 600 s healthy."""

from __future__ import annotations

from tei_reconciler.planner.backoff import (
    BackoffPolicy,
    CrashLoop,
    delay_for,
    record_crash,
    waiting,
)

K8S = BackoffPolicy(initial=10, maximum=300, reset_after=600)


def test_delays_double_from_ten_seconds_and_cap_at_five_minutes() -> None:
    assert [delay_for(n, K8S) for n in range(1, 9)] == [10, 20, 40, 80, 160, 300, 300, 300]


def test_a_thousand_crashes_do_not_overflow() -> None:
    assert delay_for(1000, K8S) == 300


def test_repeated_crashes_wait_longer_each_time() -> None:
    state, now, waits = CrashLoop(), 0.0, []
    for _ in range(5):
        state = record_crash(state, now=now, healthy_for=1.0, spec_hash="h", policy=K8S)
        assert state.until is not None
        waits.append(state.until - now)
        now = state.until + 1
    assert waits == [10, 20, 40, 80, 160]


def test_ten_healthy_minutes_forget_the_crash_history() -> None:
    state = CrashLoop(crashes=4, delay=80, until=0, spec_hash="h")
    after = record_crash(state, now=5000, healthy_for=600, spec_hash="h", policy=K8S)
    assert (after.crashes, after.delay) == (1, 10)


def test_a_new_spec_starts_the_curve_over() -> None:
    state = CrashLoop(crashes=4, delay=80, until=0, spec_hash="old")
    after = record_crash(state, now=5, healthy_for=0, spec_hash="new", policy=K8S)
    assert after.crashes == 1


def test_waiting_applies_only_to_the_spec_that_crashed() -> None:
    state = CrashLoop(crashes=1, delay=10, until=10, spec_hash="h")
    assert waiting(state, now=5, spec_hash="h")
    assert not waiting(state, now=10, spec_hash="h")
    assert not waiting(state, now=5, spec_hash="other")
