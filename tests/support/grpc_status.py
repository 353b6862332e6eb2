"""The status a server really answered a call with.

grpcio's asyncio client turns a message write that races the server's early status (an auth
refusal sent before the client finished writing) into a local INTERNAL "Internal error from
Core", dropping the server's own code (grpc/grpc#36066; the router keeps the instance's
status from the same race, `tei_reconciler.router.ending`). Such an attempt tells nothing
about the server, so `answered` makes the call again; every attempt still sends its messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from tei_reconciler.router.ending import lost_to_a_write

T = TypeVar("T")
ATTEMPTS = 20


async def answered(call: Callable[[], Awaitable[T]]) -> T | grpc.aio.AioRpcError:
    """`call()`'s result, or the error status the server ended it with."""
    for _ in range(ATTEMPTS):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if not lost_to_a_write(exc):
                return exc
    raise AssertionError(f"every one of {ATTEMPTS} attempts lost its write: no status seen")
