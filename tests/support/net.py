"""Sockets for tests: a free port to give a child (port 0 is for our own listeners), and
whether something listens."""

from __future__ import annotations

import random
import socket


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


def port_base() -> int:
    """The start of 400 ports for one test's port ranges, chosen at random so that tests
    running at once (and other people's) rarely meet."""
    return random.randrange(20000, 50000, 400)


def port_ranges() -> dict[str, tuple[int, int]]:
    """`instance_port_range` and `prometheus_port_range` settings for one test: 200 ports
    each from a `port_base`."""
    base = port_base()
    return {
        "instance_port_range": (base, base + 200),
        "prometheus_port_range": (base + 200, base + 400),
    }
