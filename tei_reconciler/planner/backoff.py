"""Crash-loop backoff, as pure arithmetic on explicit times.

Kubernetes restarts a crashed container after 10 s, then 20 s, 40 s, ... capped at 300 s, and
forgets the history once the container has run healthy for 10 minutes. The same curve applies
here to crashes *and* to failed liveness probes, before and after startup (supervisord's gap).
Time is a parameter: the controller passes its clock's `now`, tests pass numbers.
"""

from __future__ import annotations

import msgspec


class BackoffPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The curve: `initial` doubling per consecutive crash up to `maximum`; a process that
    stayed healthy for `reset_after` seconds starts the curve over."""

    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0


class CrashLoop(msgspec.Struct, frozen=True, kw_only=True):
    """The crash history of one instance: how many crashes in a row, and until when to wait.

    `spec_hash` is the spec the crashing process ran: a spec change ends the wait at once,
    as a new Kubernetes pod template does.
    """

    crashes: int = 0
    delay: float = 0.0
    until: float | None = None  # monotonic seconds; None = no wait pending
    spec_hash: str = ""


def delay_for(crashes: int, policy: BackoffPolicy) -> float:
    """The wait before restarting after the `crashes`-th consecutive crash (1-based)."""
    if crashes <= 0:
        return 0.0
    # Cap the exponent first: 2**crashes overflows a float long before anyone waits that long.
    exponent = min(crashes - 1, 64)
    return float(min(policy.initial * (2.0**exponent), policy.maximum))


def record_crash(
    state: CrashLoop,
    *,
    now: float,
    healthy_for: float,
    spec_hash: str,
    policy: BackoffPolicy,
) -> CrashLoop:
    """The history after one more crash at `now`, of a process that had been healthy (Ready)
    for `healthy_for` seconds. A long healthy run, or a different spec, forgets the past."""
    previous = state.crashes
    if healthy_for >= policy.reset_after or state.spec_hash != spec_hash:
        previous = 0
    crashes = previous + 1
    delay = delay_for(crashes, policy)
    return CrashLoop(crashes=crashes, delay=delay, until=now + delay, spec_hash=spec_hash)


def waiting(state: CrashLoop, *, now: float, spec_hash: str) -> bool:
    """Whether a restart of `spec_hash` must still wait at `now`."""
    return state.until is not None and state.until > now and state.spec_hash == spec_hash
