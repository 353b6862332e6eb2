"""The REST API as one Starlette app: a declarative routes list and a lifespan.

The app is a thin layer: it edits the state file and reads the controller's status store, and
it is handed two callables instead of the controller itself (`on_change` marks the controller
dirty after a write; `preview` plans a desired state without acting). It imports nothing that
could start or stop a process (an import-linter contract). Auth plugs in as middleware passed
to `create_app`: it runs before routing, and answers its refusals itself with
`tei_reconciler.api.errors.error_response`, so 401/403 use the same JSON envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from tei_reconciler._types import Clock, SystemClock
from tei_reconciler.api import instances, models, state, streams, system, traffic, ui
from tei_reconciler.api.context import ApiContext, ModelCommands, Preview
from tei_reconciler.api.errors import EXCEPTION_HANDLERS
from tei_reconciler.api.instance_metrics import instance_metrics
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.routing import DataPlane
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.traffic import TrafficRing

ONE = "/instances/{name}"
MODEL = "/models/{model_id:path}"  # ids hold a slash; sent encoded (BAAI%2Fbge) or not

ROUTES = [
    Route("/health", system.health, methods=["GET"]),
    Route("/ready", system.ready, methods=["GET"]),
    Route("/metrics", system.metrics, methods=["GET"]),
    Route("/openapi.json", system.openapi, methods=["GET"]),
    Route("/instances", instances.list_instances, methods=["GET"]),
    Route("/instances", instances.create_instance, methods=["POST"]),
    Route(ONE, instances.get_instance, methods=["GET"]),
    Route(ONE, instances.apply_instance, methods=["PUT"]),
    Route(ONE, instances.delete_instance, methods=["DELETE"]),
    Route(f"{ONE}/start", instances.start_instance, methods=["POST"]),
    Route(f"{ONE}/stop", instances.stop_instance, methods=["POST"]),
    Route(f"{ONE}/restart", instances.restart_instance, methods=["POST"]),
    Route(f"{ONE}/logs", streams.get_logs, methods=["GET"]),
    Route(f"{ONE}/events", streams.instance_events, methods=["GET"]),
    Route(f"{ONE}/metrics", instance_metrics, methods=["GET"]),
    Route(f"{ONE}/traffic", traffic.instance_traffic, methods=["GET"]),
    Route("/events", streams.list_events, methods=["GET"]),
    Route("/traffic", traffic.all_traffic, methods=["GET"]),
    Route("/state", state.get_state, methods=["GET"]),
    Route("/state", state.put_state, methods=["PUT"]),
    Route("/plan", state.get_plan, methods=["GET"]),
    Route("/models", models.list_models, methods=["GET"]),
    Route("/models", models.declare_model, methods=["POST"]),
    Route(f"{MODEL}/download", models.download_model, methods=["POST"]),
    Route(f"{MODEL}/events", models.model_events, methods=["GET"]),
    Route(MODEL, models.get_model, methods=["GET"]),
    Route(MODEL, models.delete_model, methods=["DELETE"]),
]


def create_app(
    *,
    statefile: StateFile,
    store: StatusStore,
    settings: Settings,
    on_change: Callable[[], None],
    preview: Preview,
    middleware: Sequence[Middleware] = (),
    clock: Clock | None = None,
    traffic: TrafficRing | None = None,
    data_plane: DataPlane | None = None,
    models: ModelCommands | None = None,
) -> Starlette:
    """The REST API over `statefile` (desired state) and `store` (observed status);
    `traffic` is the ring the data plane records calls in (an empty one when not given), and
    `data_plane` what carries the gRPC traffic (health, `?wait=ready`, `routed_by`)."""
    ctx = ApiContext(
        statefile=statefile,
        store=store,
        settings=settings,
        on_change=on_change,
        preview=preview,
        clock=clock or SystemClock(),
        traffic=traffic or TrafficRing(),
        data_plane=data_plane,
        models=models,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx.closing = anyio.Event()  # serve_api sets it when shutdown begins
        yield
        ctx.closing.set()

    app = Starlette(
        routes=[*ROUTES, *ui.ROUTES],
        middleware=list(middleware),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app
