"""Liveness, readiness, metrics, the OpenAPI document, the event log and the 500 envelope."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from prometheus_client import Counter
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tei_reconciler.api.app import ROUTES
from tei_reconciler.api.context import planned
from tei_reconciler.api.errors import error_response
from tei_reconciler.api.schemas import PlannedAction
from tei_reconciler.desired.spec import DesiredState, InstanceSpec
from tei_reconciler.planner.plan import Forget, Start, Stop

from .harness import Api, build


@pytest.mark.anyio
async def test_health_is_always_healthy(api: Api) -> None:
    body = (await api.client.get("/health")).json()
    assert body["status"] == "healthy"
    assert body["timestamp"].endswith("Z")


@pytest.mark.anyio
async def test_ready_waits_for_a_first_pass_and_a_valid_state(api: Api) -> None:
    response = await api.client.get("/ready")
    assert response.status_code == 503
    assert response.json()["code"] == "NOT_READY"
    api.store.first_pass_done = True
    api.store.spec_errors = ("state.toml:3:1: instances.a.prot: unknown key",)
    never_valid = await api.client.get("/ready")
    assert never_valid.status_code == 503
    assert "no valid state file has been read yet" in never_valid.json()["error"]
    api.store.spec_errors = ()
    api.store.observed_revision = "abc"
    ready = await api.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["revision"] == "abc"


@pytest.mark.anyio
async def test_a_later_invalid_file_is_a_warning_in_ready_never_a_503(api: Api) -> None:
    api.store.first_pass_done = True
    api.store.observed_revision = "abc"
    api.store.spec_errors = ("state.toml:3:1: instances.a.prot: unknown key",)
    response = await api.client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["revision"], body["spec_valid"]) == ("ready", "abc", False)
    assert body["warnings"] == [
        "the state file is invalid (1 problem); the last good state stays in force; "
        "GET /plan lists the problems"
    ]
    assert "prot" not in response.text  # the file's content stays behind auth


@pytest.mark.anyio
async def test_metrics_expose_the_default_prometheus_registry(api: Api) -> None:
    Counter("tei_api_test_probe_total", "a metric the test registers").inc()
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "tei_api_test_probe_total 1.0" in response.text


@pytest.mark.anyio
async def test_the_openapi_document_covers_every_route_and_method(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    served = {
        (method.lower(), re.sub(r":\w+}", "}", route.path))  # {model_id:path}: {model_id}
        for route in ROUTES
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served
    create = doc["paths"]["/instances"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "CreateInstanceRequest"
    )
    assert {"201", "400", "409", "413", "415", "422", "500"} <= create["responses"].keys()
    props = doc["components"]["schemas"]["CreateInstanceRequest"]["properties"]
    assert {"name", "model_id", "port", "gpu_id", "pooling", "extra_args"} <= props.keys()


@pytest.mark.anyio
async def test_events_are_listed_oldest_first_and_per_instance(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    api.store.record_event("a", "Normal", "Started", "process 1 started", 1_700_000_000.0)
    api.store.record_event("", "Warning", "SpecInvalid", "bad file", 1_700_000_005.0)
    api.store.record_event("a", "Normal", "Started", "process 1 started", 1_700_000_010.0)
    events = (await api.client.get("/events")).json()
    assert [(e["reason"], e["count"]) for e in events] == [("SpecInvalid", 1), ("Started", 2)]
    mine = (await api.client.get("/instances/a/events")).json()
    assert len(mine) == 1
    assert mine[0]["first_time"].startswith("2023-11-14T22:13:20")
    assert mine[0]["last_time"].startswith("2023-11-14T22:13:30")


@pytest.mark.anyio
async def test_an_unexpected_failure_is_500_internal_error_in_the_envelope(
    tmp_path: Path,
) -> None:
    app, _api = build(tmp_path)

    def broken_planner(desired: DesiredState) -> list[object]:
        raise RuntimeError("planner bug")

    app.state.ctx.preview = broken_planner
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/plan")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "INTERNAL_ERROR"
    assert "planner bug" not in body["error"]


def test_the_controllers_own_actions_are_shown_as_planned_actions() -> None:
    spec = InstanceSpec(name="a", model_id="m/x")
    shown = [
        planned(a)
        for a in (Start(name="a", spec=spec), Stop(name="b", reason="Removed"), Forget(name="c"))
    ]
    assert shown == [
        PlannedAction(instance="a", action="start", reason="desired running, no process"),
        PlannedAction(instance="b", action="stop", reason="Removed"),
        PlannedAction(instance="c", action="forget", reason=""),
    ]


class _RequireToken:
    """A stand-in auth middleware: what the auth issue plugs into `create_app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        if scope["type"] == "http" and headers.get(b"authorization") != b"Bearer t0k3n":
            response = error_response(401, "UNAUTHENTICATED", "missing or wrong bearer token")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@pytest.mark.anyio
async def test_auth_middleware_refusals_use_the_json_envelope(tmp_path: Path) -> None:
    _, api = build(tmp_path, middleware=[Middleware(_RequireToken)])
    async with api.client:
        refused = await api.client.get("/instances")
        assert refused.status_code == 401
        assert refused.json()["code"] == "UNAUTHENTICATED"
        allowed = await api.client.get("/instances", headers={"authorization": "Bearer t0k3n"})
        assert allowed.status_code == 200
