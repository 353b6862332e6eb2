"""How a relayed call ends for the client: with the instance's own status, in the router's
words where gRPC core's would mislead.

- grpcio's asyncio client replaces the status of a call whose message write raced the call's
  end with a local INTERNAL "Internal error from Core" (grpc/grpc#36066). The router writes a
  stream's requests while the instance answers, so a stream the instance ended with, say,
  RESOURCE_EXHAUSTED could reach the client as that INTERNAL. `StatusWatch` keeps the first
  status grpcio sets for a call: the instance's, which the failed write overwrites after it.
- An answer above `max_message_mb` is refused by the router's own channel in gRPC core's
  words, "Stream removed (CLIENT: Received message larger than max (N vs. M))", where the
  client is the router; `answer_too_large` says instead which instance answered how much, and
  which setting bounds it.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from typing import Any

import grpc

from tei_reconciler.router.routes import RouteError

WRITE_RACE_DETAILS = "Internal error from Core"
_TOO_LARGE = re.compile(r"CLIENT: Received message larger than max \((\d+) vs\. (\d+)\)")


def lost_to_a_write(exc: grpc.aio.AioRpcError) -> bool:
    """Whether `exc` is grpcio's own INTERNAL for a write that raced the call's end."""
    return bool(exc.code() == grpc.StatusCode.INTERNAL and exc.details() == WRITE_RACE_DETAILS)


class StatusWatch:
    """Notes the status grpcio first sets for `call` (its done callbacks run once, on that
    first status); `error` prefers it to the write race's INTERNAL."""

    def __init__(self, call: grpc.aio.Call) -> None:
        self._first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._note)

    def _note(self, call: grpc.aio.Call) -> None:
        code = _at_once(call.code())
        if code is None or code == grpc.StatusCode.OK:
            return
        self._first = grpc.aio.AioRpcError(
            code,
            _at_once(call.initial_metadata()),
            _at_once(call.trailing_metadata()),
            _at_once(call.details()),
            _at_once(call.debug_error_string()),
        )

    def error(self, seen: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """The error the instance ended the call with, for a call that failed with `seen`."""
        if self._first is not None and lost_to_a_write(seen):
            return self._first
        return seen


def _at_once(status: Coroutine[Any, Any, Any]) -> Any:
    """What one of a finished call's status coroutines returns: they return without waiting,
    so a done callback can read them (None, and the coroutine closed, if one would wait)."""
    try:
        status.send(None)
    except StopIteration as returned:
        return returned.value
    status.close()
    return None


def answer_too_large(
    exc: grpc.aio.AioRpcError, instance: str, limit_bytes: int
) -> RouteError | None:
    """The router's answer for a call its channel ended because the instance's answer was
    above `limit_bytes` (None for any other error)."""
    found = _TOO_LARGE.search(exc.details() or "")
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or found is None:
        return None
    size, limit = int(found[1]), int(found[2])
    if limit != limit_bytes:  # another limit than the router's own (a proxy's in between)
        return None
    return RouteError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"answer message of {size} bytes from instance {instance} not relayed: the router "
        f"relays at most {limit} bytes ({limit >> 20} MiB, max_message_mb) per message; "
        "send fewer or shorter inputs per message, or raise max_message_mb",
    )
