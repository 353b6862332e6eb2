"""The router's behaviour tests run once per data plane (the `data_plane` fixture)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tei_reconciler.routing import RoutingTable

from .harness import Serve, running_router


@pytest.fixture
def serve(data_plane: str, tmp_path: Path) -> Serve:
    """`serve(table, **options)`: `running_router` with this test's data plane."""

    def start(table: RoutingTable, **options: Any) -> AbstractAsyncContextManager[int]:
        return running_router(table, data_plane=data_plane, runtime=tmp_path, **options)

    return start
