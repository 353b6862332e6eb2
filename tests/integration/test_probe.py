"""Probes against a real engine: the health service of the model, and IPv6 instance hosts."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import grpc
import pytest

from tei_reconciler.drivers.probe import GrpcProber, ProbeTarget

from support.engines import running

pytestmark = pytest.mark.anyio


@pytest.fixture
def ipv6_engine() -> Iterator[int]:
    """A hash engine listening on ::1 only; yields its gRPC port."""
    with running("hash/8", host="::1") as engine:
        yield engine.port


async def test_an_instance_on_an_ipv6_host_passes_its_grpc_probe(ipv6_engine: int) -> None:
    with anyio.fail_after(60):  # the engine opens its port once its model is ready
        async with grpc.aio.insecure_channel(f"[::1]:{ipv6_engine}") as channel:
            await channel.channel_ready()
    target = ProbeTarget(name="v6", pid=0, host="::1", port=ipv6_engine)
    async with GrpcProber().probe(target) as probe:
        outcome = await probe.check(10.0)
    assert outcome.ok, outcome.message
