"""One HTTP/2 channel per instance endpoint, created lazily and dropped when it goes stale.

A grpc.aio channel connects in the background on first use, so creating one is a plain
dictionary insert and nothing holds a lock across a connect (tei-manager held one). An entry
remembers the address and generation it was made for: a call for an instance that restarted
on another port, or was replaced, gets a fresh channel at once; `sync` drops the channels of
instances that stopped, stopped being Ready or were deleted; `prune_idle` drops the ones
that carry no call and have not for `idle_secs` (a stream may run for hours). Dropped
channels are closed with a grace period by whoever owns the pool (the router's maintenance
task), so calls already running on them finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from tei_reconciler.routing import Endpoint, RoutingTable

MultiCallable = Any  # grpc.aio's multi-callables are untyped


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_retries", 0),
    ]


class Connection:
    """A channel to one instance endpoint, plus its cached raw-bytes multi-callables."""

    def __init__(self, endpoint: Endpoint, channel: grpc.aio.Channel, now: float) -> None:
        self.key = (endpoint.address, endpoint.generation)
        self.channel = channel
        self.last_used = now
        self.active = 0  # calls running on the channel (`acquire` / `release`)
        self._unary: dict[str, MultiCallable] = {}
        self._stream: dict[str, MultiCallable] = {}
        self._client_stream: dict[str, MultiCallable] = {}

    def unary_unary(self, path: str) -> MultiCallable:
        call = self._unary.get(path)
        if call is None:
            call = self._unary[path] = self.channel.unary_unary(path)
        return call

    def stream_stream(self, path: str) -> MultiCallable:
        call = self._stream.get(path)
        if call is None:
            call = self._stream[path] = self.channel.stream_stream(path)
        return call

    def stream_unary(self, path: str) -> MultiCallable:
        call = self._client_stream.get(path)
        if call is None:
            call = self._client_stream[path] = self.channel.stream_unary(path)
        return call


class ChannelPool:
    def __init__(
        self,
        *,
        max_message_bytes: int,
        idle_secs: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_message_bytes = max_message_bytes  # the largest answer a channel takes
        self._options = channel_options(max_message_bytes)
        self.idle_secs = idle_secs
        self._clock = clock
        self._connections: dict[str, Connection] = {}
        self.retired: list[grpc.aio.Channel] = []

    def __len__(self) -> int:
        return len(self._connections)

    def get(self, endpoint: Endpoint) -> Connection:
        now = self._clock()
        conn = self._connections.get(endpoint.name)
        if conn is not None and conn.key == (endpoint.address, endpoint.generation):
            conn.last_used = now
            return conn
        if conn is not None:
            self.retired.append(conn.channel)
        channel = grpc.aio.insecure_channel(endpoint.address, options=self._options)
        conn = self._connections[endpoint.name] = Connection(endpoint, channel, now)
        return conn

    def acquire(self, conn: Connection) -> None:
        conn.active += 1
        conn.last_used = self._clock()

    def release(self, conn: Connection) -> None:
        conn.active -= 1
        conn.last_used = self._clock()

    def address_of(self, name: str) -> tuple[str, int] | None:
        conn = self._connections.get(name)
        return None if conn is None else conn.key

    def sync(self, table: RoutingTable) -> None:
        """Retire the channels of instances that are gone or moved (a new process or port).

        An instance that is merely not Ready keeps its channel: it gets no new calls, but the
        calls it is serving finish (a stop or restart replaces the process, and then the
        generation moves)."""
        for name, conn in list(self._connections.items()):
            endpoint = table.get(name)
            if endpoint is None or conn.key != (endpoint.address, endpoint.generation):
                del self._connections[name]
                self.retired.append(conn.channel)

    def prune_idle(self) -> None:
        cutoff = self._clock() - self.idle_secs
        for name, conn in list(self._connections.items()):
            if conn.active == 0 and conn.last_used < cutoff:
                del self._connections[name]
                self.retired.append(conn.channel)

    def take_retired(self) -> list[grpc.aio.Channel]:
        retired, self.retired = self.retired, []
        return retired

    def drain(self) -> list[grpc.aio.Channel]:
        """Retire every channel (router shutdown) and return all channels to close."""
        for conn in self._connections.values():
            self.retired.append(conn.channel)
        self._connections.clear()
        return self.take_retired()
