"""Task boundaries: what ends a task, and what a task's end means.

On asyncio a `CancelledError` does not always come from a cancel scope: grpc.aio raises one
in every call on a channel that another task closed. anyio reads a task that ends with one as
"cancelled" and cancels its task group without a word, which is how one probe could once end
the whole control loop silently. `cancelled_here()` tells a cancellation of ours (an enclosing
scope was cancelled: re-raise it) from such a stray one (an error like any other).

A library may also replace the cancellation anyio delivered with one of its own (grpc.aio
raises a fresh `CancelledError` from a call cancelled under it), which anyio's scope then does
not recognise and lets through. `scoped(scope)` is a cancel scope that owns whatever
cancellation leaves it once it was cancelled (and no scope around it was).

`stray(exc)` is the test every boundary uses; `essential` runs a part of the process (the
controller, the REST API, the router, the watcher) whose end, by return or by error, is a
crash of the whole process, never a zombie that keeps answering.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus

from tei_reconciler.errors import TeiReconcilerError


class PartEnded(TeiReconcilerError):
    """A part that runs for the life of the process ended: the process must exit."""


def cancelled_here() -> bool:
    """Whether a cancel scope around the current task has been cancelled (or timed out)."""
    return anyio.current_effective_deadline() == -math.inf


def stray(exc: BaseException) -> bool:
    """Whether `exc` is an error to turn into an outcome: any Exception, and a cancellation
    that no enclosing scope asked for. A real cancellation, KeyboardInterrupt and SystemExit
    are not: they must go on up."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return not cancelled_here()
    return isinstance(exc, Exception)


@contextmanager
def scoped(scope: anyio.CancelScope) -> Iterator[anyio.CancelScope]:
    """Enter `scope` (a CancelScope, `move_on_after`, ...); once it has been cancelled or has
    timed out, a cancellation leaving it ends here even when a library raised it in place of
    anyio's own, unless a scope around it was cancelled too."""
    try:
        with scope:
            yield scope
    except anyio.get_cancelled_exc_class():
        if scope.cancel_called and not cancelled_here():
            return
        raise


async def essential(
    what: str,
    part: Callable[..., Awaitable[None]],
    *args: Any,
    crashed: Callable[[], None] = lambda: None,
    task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run `part(*args, task_status=...)`, which must run until cancelled. Its end by return,
    by error or by a cancellation nobody asked for calls `crashed()` first (before anything
    else is cancelled), then raises: PartEnded naming `what`, or the error as it is."""
    try:
        await part(*args, task_status=task_status)
    except BaseException as exc:
        if not stray(exc):
            raise
        crashed()
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            raise PartEnded(f"{what} was ended by a stray cancellation") from exc
        raise
    crashed()
    raise PartEnded(f"{what} ended unexpectedly")
