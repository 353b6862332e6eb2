"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Production runs anyio on asyncio (grpc.aio and hypercorn need it), so tests do too."""
    return "asyncio"
