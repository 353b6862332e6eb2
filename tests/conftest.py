"""Fixtures shared by every test directory, and the hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

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
