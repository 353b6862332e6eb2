"""The real REST app (create_app) and the real gRPC data plane, served on 127.0.0.1 port 0
with whatever `build_rest_auth` / the data plane make of the settings' `[auth]`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from tei_reconciler._types import SystemClock
from tei_reconciler.api import create_app
from tei_reconciler.api.serve import serve_api
from tei_reconciler.auth import build_rest_auth
from tei_reconciler.dataplane.binary import Choice, find_envoy
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import AuthSettings, Settings
from tei_reconciler.store import StatusStore

from support.envoy import first_routes_applied


def settings_with(tmp_path: Path, auth: AuthSettings) -> Settings:
    runtime = tmp_path / "runtime"
    (runtime / "logs").mkdir(parents=True, exist_ok=True)
    return Settings(
        runtime_dir=str(runtime),
        state_file=str(tmp_path / "state.toml"),
        api_port=0,
        grpc_port=0,
        stop_grace_secs=1,
        auth=auth,
    )


@asynccontextmanager
async def rest_server(settings: Settings, store: StatusStore | None = None) -> AsyncIterator[str]:
    """Serve the API; yields its base URL (https:// when auth built a TLS context)."""
    middleware, context = build_rest_auth(settings)
    app = create_app(
        statefile=StateFile(Path(settings.state_file), reserved_ports=frozenset()),
        store=store or StatusStore(),
        settings=settings,
        on_change=lambda: None,
        preview=lambda desired: [],
        middleware=middleware,
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(_serve_api, app, context)
        try:
            yield f"{'https' if context else 'http'}://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


async def _serve_api(app: Any, context: Any, *, task_status: Any) -> None:
    await serve_api(app, host="127.0.0.1", port=0, ssl=context, task_status=task_status, grace=1)


@asynccontextmanager
async def grpc_router(settings: Settings, data_plane: str = "grpcio") -> AsyncIterator[int]:
    """Serve the data plane (no instances) with the auth the settings ask for; yields its
    port. With Envoy, Envoy terminates TLS and checks every call, as in production."""
    choice = Choice(kind="envoy", binary=find_envoy("auto"), reason="test")
    if data_plane == "grpcio":
        choice = Choice(kind="grpcio", binary=None, reason="test")
    runner = DataPlaneRunner(
        msgspec.structs.replace(settings, grpc_host="127.0.0.1", grpc_port=0, stop_grace_secs=1.0),
        RoutingTable(),
        store=StatusStore(),
        clock=SystemClock(),
        choice=choice,
    )
    async with anyio.create_task_group() as tg:
        port: int = await tg.start(runner.serve)
        try:
            await first_routes_applied(runner.plane)  # they carry the auth context
            yield port
        finally:
            tg.cancel_scope.cancel()
