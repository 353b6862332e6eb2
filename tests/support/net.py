"""Sockets for tests: a free port to give a child (port 0 is for our own listeners), and
whether something listens."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a child process that cannot bind port 0 itself."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to `host:port` is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral ports begin: every outgoing connection, and every
    listener on port 0, takes one of those (Linux's default where /proc does not say)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_base() -> int:
    """The start of 400 ports for one test's port ranges, chosen at random below the
    ephemeral ports so that tests running at once (and other people's) rarely meet: any of
    about 12,000 ports, so two tests share a first port about one time in 12,000."""
    top = _ephemeral_start()
    if top < 24000:  # a kernel that leaves few ports below its ephemeral ones
        top = 50400
    return random.randrange(20000, top - 400)


def port_ranges() -> dict[str, tuple[int, int]]:
    """`instance_port_range` and `prometheus_port_range` settings for one test: 200 ports
    each from a `port_base`."""
    base = port_base()
    return {
        "instance_port_range": (base, base + 200),
        "prometheus_port_range": (base + 200, base + 400),
    }
