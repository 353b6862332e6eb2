"""The router's behaviour tests run once per data plane (the `data_plane` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tei_reconciler.routing import DataPlane, RoutingTable

from .harness import Serve, running_data_plane, running_router


@pytest.fixture
def serve(data_plane: str, tmp_path: Path) -> Serve:
    """`serve(table, **options)`: `running_router` with this test's data plane."""

    def start(table: RoutingTable, **options: Any) -> AbstractAsyncContextManager[int]:
        return running_router(table, data_plane=data_plane, runtime=tmp_path, **options)

    return start


@pytest.fixture
def serve_plane(
    data_plane: str, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[tuple[int, DataPlane]]]:
    """`serve_plane(table, **options)`: like `serve`, yielding the port and the data plane."""

    def start(
        table: RoutingTable, **options: Any
    ) -> AbstractAsyncContextManager[tuple[int, DataPlane]]:
        return running_data_plane(table, data_plane=data_plane, runtime=tmp_path, **options)

    return start
