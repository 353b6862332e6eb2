"""Probes against a real engine: the health service of the model, and IPv6 instance hosts."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import grpc
import pytest

from tei_reconciler.drivers.probe import GrpcProber

pytestmark = pytest.mark.anyio


def free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def ipv6_engine() -> Iterator[int]:
    """A hash engine listening on ::1 only; yields its gRPC port."""
    port = free_port(socket.AF_INET6, "::1")
    flags = ["--model-id", "hash/8", "--hostname", "::1", "--port", str(port)]
    flags += ["--prometheus-port", str(free_port(socket.AF_INET, "127.0.0.1"))]
    child = subprocess.Popen(
        [sys.executable, "-m", "tei_reconciler", "engine", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        child.kill()
        child.wait()


async def test_an_instance_on_an_ipv6_host_passes_its_grpc_probe(ipv6_engine: int) -> None:
    with anyio.fail_after(60):  # the engine opens its port once its model is ready
        async with grpc.aio.insecure_channel(f"[::1]:{ipv6_engine}") as channel:
            await channel.channel_ready()
    prober = GrpcProber()
    try:
        outcome = await prober.check("v6", "::1", ipv6_engine, 10.0)
        assert outcome.ok, outcome.message
    finally:
        await prober.forget("v6")
