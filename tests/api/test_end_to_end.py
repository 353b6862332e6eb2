"""The API wired to the real controller: create -> Ready -> embed -> stop -> delete, with a
real engine child."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import grpc
import httpx
import pytest
from anyio.abc import TaskStatus

from tei_reconciler.api import create_app, serve_api
from tei_reconciler.control.controller import Controller
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.service import serve
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

from support.net import free_port
from support.waiting import DEADLINE


@pytest.mark.anyio
async def test_an_instance_created_through_the_api_becomes_ready_and_goes_away(
    tmp_path: Path,
) -> None:
    port, prom = free_port(), free_port()
    settings = Settings(
        state_file=str(tmp_path / "state.toml"),
        runtime_dir=str(tmp_path / "runtime"),
        api_port=0,
        grpc_port=0,
        tei_binary="builtin",
        instance_port_range=(port, port + 1),
        prometheus_port_range=(prom, prom + 1),
        health_interval_secs=1.0,
        stop_grace_secs=5.0,
    )
    store = StatusStore()
    bound: list[int] = []

    async def api(
        controller: Controller, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        app = create_app(
            statefile=StateFile(Path(settings.state_file), reserved_ports=settings.reserved_ports),
            store=store,
            settings=settings,
            on_change=controller.mark_dirty,
            preview=controller.preview,
        )
        async with anyio.create_task_group() as tg:
            bound.append(await tg.start(partial(serve_api, app, host="127.0.0.1", port=0)))
            task_status.started(bound[0])

    with anyio.fail_after(DEADLINE * 2):
        async with anyio.create_task_group() as tg:
            await tg.start(partial(serve, settings, store=store, extra=[api], handle_signals=False))
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{bound[0]}", timeout=DEADLINE + 10
            ) as client:
                created = await client.post(
                    f"/instances?wait=ready&timeout={DEADLINE}",
                    json={"name": "e2e", "model_id": "hash/8", "gpu": "none"},
                )
                assert created.status_code == 201, created.text
                body = created.json()
                assert (body["ready"], body["status"], body["port"]) == (True, "running", port)
                assert body["pid"] is not None
                plan = (await client.get("/plan")).json()
                assert plan["valid"] is True
                logs = (await client.get("/instances/e2e/logs")).json()
                assert logs["total_lines"] >= 1
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    embedded = await tei_pb2_grpc.EmbedStub(channel).Embed(
                        tei_pb2.EmbedRequest(inputs="through the engine the API started")
                    )
                assert len(embedded.embeddings) == 8
                stopped = await client.post("/instances/e2e/stop")
                assert stopped.status_code == 200, stopped.text
                with store.subscribe() as changes:
                    while (status := store.get("e2e")) is None or status.phase != "Stopped":
                        await changes.receive()
                assert (await client.get("/instances/e2e")).json()["status"] == "stopped"
                with store.subscribe() as changes:
                    assert (await client.delete("/instances/e2e")).status_code == 204
                    while store.get("e2e") is not None:  # stopped, then forgotten
                        await changes.receive()
                assert (await client.get("/instances")).json() == []
            tg.cancel_scope.cancel()
