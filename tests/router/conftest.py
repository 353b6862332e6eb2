"""The router's behaviour tests run once per data plane (the `data_plane` fixture)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tei_reconciler.routing import DataPlane, RoutingTable

from .harness import UNDER_TEST, running_data_plane


@pytest.fixture
def each_data_plane(data_plane: str, tmp_path: Path) -> Iterator[str]:
    """Every helper of `harness.py` serves with `data_plane` (Envoy's files in tmp_path)."""
    UNDER_TEST.kind, UNDER_TEST.runtime = data_plane, tmp_path
    try:
        yield data_plane
    finally:
        UNDER_TEST.kind, UNDER_TEST.runtime = "grpcio", None


@pytest.fixture
def serve_plane(
    each_data_plane: str,
) -> Callable[..., AbstractAsyncContextManager[tuple[int, DataPlane]]]:
    """`serve_plane(table, **options)`: the port and the data plane under test."""

    def start(
        table: RoutingTable, **options: Any
    ) -> AbstractAsyncContextManager[tuple[int, DataPlane]]:
        return running_data_plane(table, **options)

    return start
