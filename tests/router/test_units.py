"""The router's pure parts: wire splitting, channel bookkeeping, load balancing, the words of
an error."""

from __future__ import annotations

import grpc
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tei_reconciler._types import Secret
from tei_reconciler.protos.tei.v1 import tei_pb2
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.router.ending import answer_too_large
from tei_reconciler.router.pool import ChannelPool
from tei_reconciler.router.relay import Relay, upstream_metadata
from tei_reconciler.router.routes import Balancer
from tei_reconciler.router.wire import WireError, split_wrapper
from tei_reconciler.routing import RoutingTable

from .harness import endpoint

pytestmark = pytest.mark.anyio


@given(
    text=st.text(max_size=300),
    name=st.text(max_size=20),
    normalize=st.none() | st.booleans(),
    dims=st.none() | st.integers(0, 2**32 - 1),
)
def test_splitting_a_wrapper_yields_the_bytes_a_full_decode_would_forward(
    text: str, name: str, normalize: bool | None, dims: int | None
) -> None:
    inner = tei_pb2.EmbedRequest(inputs=text, normalize=normalize, dimensions=dims)
    wrapper = mux.EmbedRequest(target=mux.Target(instance_name=name), request=inner)
    raw_target, raw_inner = split_wrapper(wrapper.SerializeToString())
    assert raw_inner is not None
    assert tei_pb2.EmbedRequest.FromString(raw_inner) == inner
    assert raw_target is not None
    assert mux.Target.FromString(raw_target) == wrapper.target


def test_a_present_but_empty_inner_request_is_not_missing() -> None:
    present = mux.EmbedRequest(request=tei_pb2.EmbedRequest()).SerializeToString()
    absent = mux.EmbedRequest().SerializeToString()
    assert split_wrapper(present) == (None, b"")
    assert split_wrapper(absent) == (None, None)


def test_repeated_inner_fields_merge_like_protobuf_does() -> None:
    first = mux.EmbedRequest(request=tei_pb2.EmbedRequest(inputs="a")).SerializeToString()
    second = mux.EmbedRequest(request=tei_pb2.EmbedRequest(truncate=True)).SerializeToString()
    _, inner = split_wrapper(first + second)
    assert inner is not None
    assert tei_pb2.EmbedRequest.FromString(inner) == tei_pb2.EmbedRequest(inputs="a", truncate=True)


@pytest.mark.parametrize("garbage", [b"\x12\x05ab", b"\x80", b"\x0f", b"\x15\x01"])
def test_malformed_wrappers_are_rejected(garbage: bytes) -> None:
    with pytest.raises(WireError):
        split_wrapper(garbage)


def test_least_outstanding_prefers_the_idle_instance_and_rotates_ties() -> None:
    a, b = endpoint("a", 1), endpoint("b", 2)
    balancer = Balancer()
    balancer.acquire(a)
    assert [balancer.pick([a, b]).name for _ in range(3)] == ["b", "b", "b"]
    balancer.release(a)
    assert {balancer.pick([a, b]).name for _ in range(4)} == {"a", "b"}


def test_calls_in_flight_are_counted_per_process_of_an_instance() -> None:
    old, new = endpoint("a", 1, generation=1), endpoint("a", 2, generation=2)
    balancer = Balancer()
    balancer.acquire(old)
    balancer.acquire(new)
    balancer.acquire(new)
    assert balancer.outstanding["a"] == 3
    assert (balancer.in_flight(old.backend), balancer.in_flight(new.backend)) == (1, 2)
    balancer.release(old)
    assert balancer.in_flight(old.backend) == 0
    assert balancer.outstanding["a"] == 2
    # Another process on the same port (a restart) is another process.
    assert balancer.in_flight(endpoint("a", 2, generation=3).backend) == 0


async def test_a_channel_is_reused_until_the_instance_moves_or_leaves() -> None:
    now = [0.0]
    pool = ChannelPool(max_message_bytes=1 << 20, idle_secs=60, clock=lambda: now[0])
    table = RoutingTable()
    first = pool.get(endpoint("a", 1))
    assert pool.get(endpoint("a", 1)) is first
    moved = pool.get(endpoint("a", 2))
    assert moved is not first
    assert pool.get(endpoint("a", 2, generation=1)) is not moved
    table.update([endpoint("a", 2, generation=1, ready=False)])
    pool.sync(table)
    assert len(pool) == 1  # not Ready: no new calls, but the running ones keep their channel
    table.update([])
    pool.sync(table)
    assert len(pool) == 0
    for channel in pool.take_retired():
        await channel.close()


async def test_idle_channels_are_pruned_and_busy_ones_kept() -> None:
    now = [0.0]
    pool = ChannelPool(max_message_bytes=1 << 20, idle_secs=60, clock=lambda: now[0])
    pool.get(endpoint("idle", 1))
    now[0] = 50.0
    pool.get(endpoint("busy", 2))
    now[0] = 100.0
    pool.prune_idle()
    assert pool.address_of("idle") is None
    assert pool.address_of("busy") == ("127.0.0.1:2", 0)
    for channel in [*pool.take_retired(), *pool.drain()]:
        await channel.close()


async def test_a_channel_carrying_a_call_is_not_pruned_however_long_the_call_runs() -> None:
    now = [0.0]
    pool = ChannelPool(max_message_bytes=1 << 20, idle_secs=60, clock=lambda: now[0])
    relay = Relay(RoutingTable(), pool, request_timeout_secs=30, default_instance=None)
    streaming = endpoint("streaming", 1)
    conn = relay.begin(streaming)
    now[0] = 3600.0  # an hour-long EmbedStream, nothing else sent to this instance
    pool.prune_idle()
    assert pool.address_of("streaming") == ("127.0.0.1:1", 0)
    assert pool.take_retired() == []
    relay.end(streaming, conn, "/tei.v1.Embed/EmbedStream", "OK", 0.0)
    now[0] = 3630.0  # idle time counts from the end of the last call
    pool.prune_idle()
    assert pool.address_of("streaming") is not None
    now[0] = 3661.0
    pool.prune_idle()
    assert pool.address_of("streaming") is None
    for channel in [*pool.take_retired(), *pool.drain()]:
        await channel.close()


def test_an_instance_with_an_api_key_gets_its_key_in_place_of_the_clients_authorization() -> None:
    client = (("authorization", "Bearer router-token"), ("x-request-id", "7"))
    plain = endpoint("a", 8080)
    keyed = msgspec.structs.replace(plain, api_key=Secret("instance-key"))
    assert upstream_metadata(plain, client) == client
    assert upstream_metadata(keyed, client) == (
        ("x-request-id", "7"),
        ("authorization", "Bearer instance-key"),
    )


@pytest.mark.parametrize(
    ("code", "details", "router_says"),
    [
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Stream removed (CLIENT: Received message larger than max (2000000 vs. 1048576))",
            "answer message of 2000000 bytes from instance a not relayed: the router relays at "
            "most 1048576 bytes (1 MiB, max_message_mb) per message; send fewer or shorter "
            "inputs per message, or raise max_message_mb",
        ),
        # the instance refusing a request (its own 4 MiB), another limit, the instance's words
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "SERVER: Received message larger than max (5000000 vs. 1048576)",
            None,
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Stream removed (CLIENT: Received message larger than max (3000000 vs. 2097152))",
            None,
        ),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "model is overloaded", None),
        (
            grpc.StatusCode.INTERNAL,
            "CLIENT: Received message larger than max (2000000 vs. 1048576)",
            None,
        ),
    ],
)
def test_only_an_answer_above_the_routers_own_limit_is_told_in_the_routers_words(
    code: grpc.StatusCode, details: str, router_says: str | None
) -> None:
    failure = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
    refusal = answer_too_large(failure, "a", 1 << 20)
    said = None if refusal is None else (refusal.code, refusal.message)
    assert said == (None if router_says is None else (code, router_says))
