"""The API on a real hypercorn on port 0: HTTP, live streams (SSE) and graceful shutdown."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import trustme
from starlette.applications import Starlette

from tei_reconciler.api import serve_api, streams
from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.planner.model_status import ModelState, ModelStatus
from tei_reconciler.planner.phase import Phase
from tei_reconciler.store import StatusStore

from .harness import Api, build, observed
from support.waiting import DEADLINE


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_api, app, host="127.0.0.1", port=0))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
        finally:
            tg.cancel_scope.cancel()


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, object]]:
    """(event, decoded data) pairs of a text/event-stream response; comments skipped."""
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, msgspec.json.decode(line.removeprefix("data: "))


@pytest.fixture
def app_api(tmp_path: Path) -> tuple[Starlette, Api]:
    return build(tmp_path)


@pytest.mark.anyio
async def test_a_real_server_creates_and_lists_instances(app_api: tuple[Starlette, Api]) -> None:
    app, _api = app_api
    async with served(app) as client:
        created = await client.post("/instances", json={"name": "a", "model_id": "m/x"})
        assert created.status_code == 201
        listed = await client.get("/instances")
        assert [i["name"] for i in listed.json()] == ["a"]
        missing = await client.get("/nowhere")
        assert missing.status_code == 404
        assert missing.json()["code"] == "NOT_FOUND"


@pytest.mark.anyio
async def test_cancelling_the_server_frees_its_port(app_api: tuple[Starlette, Api]) -> None:
    app, _ = app_api
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_api, app, host="127.0.0.1", port=0))
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE):
            pass
        tg.cancel_scope.cancel()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass


@pytest.mark.anyio
async def test_the_event_watch_streams_status_changes(app_api: tuple[Starlette, Api]) -> None:
    app, api = app_api
    spec = InstanceSpec(name="a", model_id="m/x")
    api.store.put(observed(spec, Phase.STARTING, ready=False, pid=7))
    headers = {"accept": "text/event-stream"}
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            async with client.stream("GET", "/events", headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                events = sse_events(response)
                event, data = await anext(events)
                assert (event, data["phase"]) == ("status", "Starting")  # type: ignore[index]
                api.store.put(observed(spec))
                event, data = await anext(events)
                assert (event, data["phase"], data["ready"]) == ("status", "Running", True)  # type: ignore[index]
                api.store.forget("a")
                assert await anext(events) == ("deleted", {"name": "a"})


@pytest.mark.anyio
async def test_an_instance_watch_sees_only_that_instance(app_api: tuple[Starlette, Api]) -> None:
    app, api = app_api
    a, b = InstanceSpec(name="a", model_id="m/x"), InstanceSpec(name="b", model_id="m/x")
    api.store.put(observed(a, Phase.STARTING, ready=False))
    headers = {"accept": "text/event-stream"}
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            async with client.stream("GET", "/instances/a/events", headers=headers) as response:
                events = sse_events(response)
                assert (await anext(events))[1]["name"] == "a"  # type: ignore[index]
                api.store.put(observed(b))
                api.store.put(observed(a))
                _event, data = await anext(events)
                assert data["name"] == "a"  # type: ignore[index]
                assert data["phase"] == "Running"  # type: ignore[index]


@pytest.mark.anyio
async def test_a_watch_that_fell_behind_shows_the_current_state_of_everything(
    tmp_path: Path,
) -> None:
    app, api = build(tmp_path, store=StatusStore(subscriber_buffer=4))
    a, b, c, d = (InstanceSpec(name=n, model_id="m/x") for n in "abcd")
    for spec in (a, b, d):
        api.store.put(observed(spec, Phase.STARTING, ready=False))
    _, api.store.observed_revision = api.statefile.read()  # the controller is up to date
    headers = {"accept": "text/event-stream"}
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            async with client.stream("GET", "/events", headers=headers) as response:
                seen: dict[str, Any] = {}
                events = sse_events(response)

                async def read(done: Callable[[], bool]) -> None:
                    while not done():
                        event, data = await anext(events)
                        body: Any = data
                        key = body["model_id"] if event == "model" else body["name"]
                        seen[key] = "deleted" if event == "deleted" else body

                await read(lambda: len(seen) == 3)  # a, b and d, Starting
                # More changes than the watch's buffer holds, before it reads any of them.
                api.store.forget("a")
                api.store.put(observed(b))
                api.store.put(observed(c))
                api.store.put_model(
                    ModelStatus(state=ModelState.AVAILABLE, model_id="org/m", reason="Cached")
                )
                for pid in range(1, 10):
                    api.store.put(observed(d, pid=pid))
                await read(
                    lambda: (
                        seen.get("a") == "deleted"
                        and "c" in seen
                        and "org/m" in seen
                        and seen["d"]["pid"] == 9
                    )
                )
                assert seen["b"]["phase"] == "Running"
                assert seen["org/m"]["reason"] == "Cached"


@pytest.mark.anyio
async def test_a_model_watch_that_fell_behind_shows_the_models_current_state(
    tmp_path: Path,
) -> None:
    app, api = build(tmp_path, store=StatusStore(subscriber_buffer=2))

    def put(model_id: str, reason: str = "") -> None:
        api.store.put_model(
            ModelStatus(state=ModelState.AVAILABLE, model_id=model_id, reason=reason)
        )

    put("org/m", "Queued")
    _, api.store.observed_revision = api.statefile.read()  # the controller is up to date
    headers = {"accept": "text/event-stream"}
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            async with client.stream("GET", "/models/org%2Fm/events", headers=headers) as response:
                events = sse_events(response)
                assert (await anext(events))[1]["reason"] == "Queued"  # type: ignore[index]
                # More changes than the watch's buffer holds, before it reads any of them (the
                # first may go straight to the watch waiting for one).
                for model_id in ("org/first", "org/m", *(f"org/other-{n}" for n in range(5))):
                    put(model_id, "Cached")
                assert (await anext(events))[1]["reason"] == "Cached"  # type: ignore[index]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/events", "/models/org%2Fm/events"])
async def test_a_quiet_watch_sends_keep_alive_comments(
    app_api: tuple[Starlette, Api], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setattr(streams, "HEARTBEAT_SECS", 0.05)
    app, _ = app_api
    headers = {"accept": "text/event-stream"}
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            async with client.stream("GET", path, headers=headers) as response:
                lines = (line async for line in response.aiter_lines() if line.startswith(":"))
                assert [await anext(lines), await anext(lines)] == [": keepalive"] * 2


@pytest.mark.anyio
async def test_following_a_log_streams_lines_as_they_are_written(
    app_api: tuple[Starlette, Api],
) -> None:
    app, api = app_api
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    log = api.runtime / "logs" / "a.log"
    log.write_bytes(b"old 1\nold 2\nold 3\n")
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            params = {"start": "-2", "follow": "true"}
            async with client.stream("GET", "/instances/a/logs", params=params) as response:
                events = sse_events(response)
                assert await anext(events) == ("log", {"index": 1, "line": "old 2"})
                assert await anext(events) == ("log", {"index": 2, "line": "old 3"})
                with log.open("ab") as f:
                    f.write(b"new \xff line\npartial")
                assert await anext(events) == ("log", {"index": 3, "line": "new \ufffd line"})
                with log.open("ab") as f:
                    f.write(b" done\n")
                assert await anext(events) == ("log", {"index": 4, "line": "partial done"})


@pytest.mark.anyio
async def test_shutdown_ends_open_streams_instead_of_waiting_for_them(
    app_api: tuple[Starlette, Api],
) -> None:
    app, api = app_api
    api.store.put(observed(InstanceSpec(name="a", model_id="m/x")))
    stop = anyio.Event()
    ended = anyio.Event()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                partial(
                    serve_api,
                    app,
                    host="127.0.0.1",
                    port=0,
                    shutdown_trigger=stop.wait,
                    grace=DEADLINE * 10,  # a stream left open would hold shutdown this long
                )
            )

            async def watch() -> None:
                url = f"http://127.0.0.1:{port}/events"
                async with (
                    httpx.AsyncClient() as client,
                    client.stream("GET", url, headers={"accept": "text/event-stream"}) as resp,
                ):
                    events = sse_events(resp)
                    await anext(events)
                    stop.set()
                    async for _ in events:
                        pass
                ended.set()

            tg.start_soon(watch)
        assert ended.is_set()


@pytest.mark.anyio
async def test_the_server_speaks_tls_with_the_context_it_is_given(
    app_api: tuple[Starlette, Api],
) -> None:
    app, _ = app_api
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_api, app, host="127.0.0.1", port=0, ssl=server_context))
        try:
            async with httpx.AsyncClient(verify=client_context) as client:
                response = await client.get(f"https://127.0.0.1:{port}/health")
                assert response.json()["status"] == "healthy"
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(f"http://127.0.0.1:{port}/health")
        finally:
            tg.cancel_scope.cancel()
