"""Every change to the models the state file names reaches the `/events` watch as the body
`GET /models/{id}` gives, with the real service: the file watcher, the controller, the model
registry fetching from a local Hub with the built-in engine as the binary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus

from tei_reconciler.api import create_app, serve_api
from tei_reconciler.control.controller import Controller
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.service import serve
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

from .test_server import sse_events
from support.hub import serving
from support.model_files import TINY
from support.net import port_ranges
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio
ONNX_ONLY = {k: v for k, v in TINY.items() if k != "model.safetensors"}
SSE = {"accept": "text/event-stream"}
Events = AsyncIterator[tuple[str, object]]
NOTHING = "[instances]\n"  # no instance, no model (an empty file is refused)
STAND_IN = '[instances.{}]\nmodel_id = "hash/8"\nstate = "stopped"\n'


@asynccontextmanager
async def service(tmp_path: Path, hub_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The whole service with the REST API on port 0; its client and its state file."""
    state = tmp_path / "state.toml"
    state.write_text(STAND_IN.format("idle"))
    settings = Settings(
        state_file=str(state),
        runtime_dir=str(tmp_path / "runtime"),
        api_port=0,
        grpc_port=0,
        tei_binary="builtin",
        huggingface_hub_cache=str(tmp_path / "hub"),
        hf_endpoint=hub_url,
        hf_offline=False,
        **port_ranges(),  # type: ignore[arg-type]
    )
    store = StatusStore()
    bound: list[int] = []

    async def api(
        controller: Controller, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        assert controller.models is not None
        app = create_app(
            statefile=StateFile(state, reserved_ports=settings.reserved_ports),
            store=store,
            settings=settings,
            on_change=controller.mark_dirty,
            preview=controller.preview,
            models=controller.models.registry,
        )
        async with anyio.create_task_group() as tg:
            bound.append(await tg.start(partial(serve_api, app, host="127.0.0.1", port=0)))
            task_status.started(bound[0])

    async with anyio.create_task_group() as tg:
        await tg.start(partial(serve, settings, store=store, extra=[api], handle_signals=False))
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{bound[0]}", timeout=DEADLINE
        ) as client:
            yield client, state
        tg.cancel_scope.cancel()


async def model_event(
    events: Events,
    model_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda _: True,
    kind: str = "model",
) -> tuple[str, dict[str, Any]]:
    """The watch's next `kind` event (`model` or `model_deleted`) about `model_id` whose data
    passes `until`. Each body is the model as it is when the watch sends it, so a change
    made before an action may arrive after it already showing the action's outcome, and the
    action's own change then follows: what matters is the state the action leads to."""
    async for event, data in events:
        if event != kind or not isinstance(data, dict):
            continue
        if data["model_id"] == model_id and until(data):
            return event, data
    raise AssertionError("the watch ended")


async def shown(client: httpx.AsyncClient, model_id: str) -> dict[str, Any]:
    answer = await client.get(f"/models/{model_id.replace('/', '%2F')}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_model_declared_used_cached_undeclared_and_removed_shows_live_on_the_watch(
    tmp_path: Path,
) -> None:
    with serving() as hub, anyio.fail_after(DEADLINE):
        hub.add("acme/onnx-only", ONNX_ONLY)
        async with (
            service(tmp_path, hub.url) as (client, state),
            client.stream("GET", "/events", headers=SSE) as response,
        ):
            events = sse_events(response)
            # the watch's first list: an instance (stopped, so nothing starts) on a model the
            # binary serves itself, as the registry shows it once the controller acted
            await model_event(events, "hash/8", lambda m: m["reason"] == "ServedWithoutCache")
            # declared by a file edit; nothing uses it and it is not kept
            declared = '[models."acme/listed"]\nrevision = "v1"\n'
            state.write_text(declared + STAND_IN.format("idle"))
            _, listed = await model_event(
                events,
                "acme/listed",
                lambda m: m.get("declared") is True and m["reason"] == "NotWanted",
            )
            assert listed == await shown(client, "acme/listed")
            assert (listed["reason"], listed["declared"], listed["revision"]) == (
                "NotWanted",
                True,
                "v1",
            )
            # one more instance on the stand-in
            state.write_text(declared + STAND_IN.format("idle") + STAND_IN.format("spare"))
            _, stand_in = await model_event(
                events, "hash/8", lambda m: "spare" in m.get("used_by", [])
            )
            assert stand_in == await shown(client, "hash/8")
            assert (stand_in["reason"], stand_in["used_by"]) == (
                "ServedWithoutCache",
                ["idle", "spare"],
            )
            # neither declared nor used any more: gone from the watch
            state.write_text(NOTHING)
            gone: set[str] = set()
            async for event, data in events:
                if event == "model_deleted" and isinstance(data, dict):
                    gone.add(data["model_id"])
                if gone == {"acme/listed", "hash/8"}:
                    break

            # fetched now though nothing declares it: the ONNX export the built-in engine reads
            fetched = await client.post(
                "/models/acme%2Fonnx-only/download", params={"wait": "true"}
            )
            assert fetched.status_code == 200, fetched.text
            assert (fetched.json()["status"], fetched.json()["reason"]) == (
                "downloaded",
                "Downloaded",
            )
            await model_event(events, "acme/onnx-only", lambda m: m["status"] == "downloaded")
            # a cached model declared, then undeclared, by file edits
            state.write_text('[models."acme/onnx-only"]\n')
            _, cached = await model_event(
                events, "acme/onnx-only", lambda m: m.get("declared", False)
            )
            assert cached == await shown(client, "acme/onnx-only")
            assert cached["status"] == "downloaded"
            state.write_text(NOTHING)
            _, cached = await model_event(
                events, "acme/onnx-only", lambda m: not m.get("declared", False)
            )
            assert cached == await shown(client, "acme/onnx-only")
            assert cached["status"] == "downloaded"
            # and removed from the cache
            evicted = await client.delete("/models/acme%2Fonnx-only", params={"evict": "true"})
            assert evicted.status_code == 204
            assert await model_event(events, "acme/onnx-only", kind="model_deleted") == (
                "model_deleted",
                {"model_id": "acme/onnx-only"},
            )
