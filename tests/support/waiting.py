"""Waiting in tests: one deadline, and polling against it (never sleeping to wait).

`DEADLINE` bounds every wait for something that should happen: generous, because a loaded
2-core machine starts Python processes slowly; it only decides how long a failing test takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

DEADLINE = 60.0
POLL = 0.02  # seconds between two looks at a condition


async def eventually(
    check: Callable[[], object], *, within: float = DEADLINE, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await anyio.sleep(POLL)


def wait_until(
    check: Callable[[], object],
    what: str,
    *,
    within: float = DEADLINE,
    detail: Callable[[], str] = str,
) -> Any:
    """`eventually` for synchronous tests; `detail()` is added to the timeout message."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}\n{detail()}")
        time.sleep(POLL)  # the polling interval of a deadline loop
