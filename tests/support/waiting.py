"""Waiting in tests: one deadline, and polling against it (never sleeping to wait).

`DEADLINE` bounds every wait for something that should happen: generous, because a loaded
2-core machine starts Python processes slowly; it only decides how long a failing test takes.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio

DEADLINE = 60.0
POLL = 0.02  # seconds between two looks at a condition


class _Wait:
    """One wait: until when, and for what."""

    def __init__(self, within: float, what: str, detail: Callable[[], str]) -> None:
        self.within, self.what, self.detail = within, what, detail
        self.deadline = time.monotonic() + within

    def give_up(self) -> None:
        """Raise once the deadline has passed."""
        if time.monotonic() > self.deadline:
            message = f"timed out after {self.within:g}s waiting for {self.what}\n{self.detail()}"
            raise AssertionError(message.rstrip())


async def eventually(
    check: Callable[[], object], *, within: float = DEADLINE, what: str = "condition"
) -> Any:
    """Poll `check` (a function, or a coroutine function) until it returns something truthy,
    and return that."""
    wait = _Wait(within, what, str)
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        wait.give_up()
        await anyio.sleep(POLL)


def wait_until(
    check: Callable[[], object],
    what: str,
    *,
    within: float = DEADLINE,
    detail: Callable[[], str] = str,
) -> Any:
    """`eventually` for synchronous tests; `detail()` is added to the timeout message."""
    wait = _Wait(within, what, detail)
    while not (result := check()):
        wait.give_up()
        time.sleep(POLL)  # the polling interval of a deadline loop
    return result
