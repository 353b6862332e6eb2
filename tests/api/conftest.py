"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .harness import Api, build


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    _, built = build(tmp_path)
    async with built.client:
        yield built
