"""Run the reconciler in-process against a real state file, real child processes and real
probes; helpers to write state files the ways editors and GitOps tools do."""

from __future__ import annotations

import os
import random
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus

from tei_reconciler.control.controller import Controller
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.routing import DataPlane, RoutingTable
from tei_reconciler.service import FrontEnds, Part, serve
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

from support.net import port_ranges
from support.processes import children
from support.waiting import DEADLINE, eventually


def fast_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for tests: small probe periods, backoffs and grace; a random port range."""
    values: dict[str, Any] = {
        "api_port": 0,
        "grpc_port": 0,
        "state_file": str(tmp / "state" / "state.toml"),
        "runtime_dir": str(tmp / "runtime"),
        "tei_binary": "builtin",
        **port_ranges(),
        "resync_interval_secs": 1.0,
        "health_interval_secs": 0.2,
        "health_timeout_secs": 2.0,
        "failure_threshold": 3,
        "startup_timeout_secs": 30.0,
        "backoff_initial_secs": 0.3,
        "backoff_max_secs": 2.0,
        "backoff_reset_secs": 600.0,
        "stop_grace_secs": 3.0,
        "on_shutdown": "stop",
        "huggingface_hub_cache": str(tmp / "hub"),  # never the user's own cache
        "hf_offline": True,  # and never the real Hub (model tests point it at a local one)
    }
    values.update(overrides)
    return Settings(**values)


def instance_toml(name: str, model_id: str = "hash/8", **fields: object) -> str:
    lines = [f"[instances.{name}]", f'model_id = "{model_id}"']
    for key, value in fields.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, dict):
            inner = ", ".join(f'{k} = "{v}"' for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """What editors do: write a temp file beside the target, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{random.randrange(1 << 30)}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def passes(controller: Controller, count: int) -> None:
    """Wait until `count` more reconcile passes have completed."""
    target = controller.passes + count
    await eventually(lambda: controller.passes >= target, what=f"{count} passes")


class Harness:
    def __init__(self, controller: Controller, store: StatusStore, table: RoutingTable) -> None:
        self.controller = controller
        self.store = store
        self.table = table
        self.ports: list[int] = []  # with front ends: the REST API's port, then the gRPC port
        self.planes: list[DataPlane] = []  # with front ends: the data plane serving the port

    def api(self) -> httpx.AsyncClient:
        """A client of the REST API (with front ends), for `async with`."""
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.ports[0]}", timeout=DEADLINE)

    @property
    def plane(self) -> DataPlane:
        return self.planes[0]

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    @property
    def state_file(self) -> Path:
        return self.controller.source.path

    def status(self, name: str) -> InstanceStatus | None:
        return self.store.get(name)

    def phase(self, name: str) -> str | None:
        status = self.store.get(name)
        return None if status is None else status.phase.value

    async def ready(self, name: str, *, within: float = DEADLINE) -> InstanceStatus:
        def check() -> InstanceStatus | None:
            status = self.store.get(name)
            return status if status is not None and status.ready else None

        result: InstanceStatus = await eventually(check, within=within, what=f"{name} Ready")
        return result

    async def phase_is(self, name: str, phase: str, *, within: float = DEADLINE) -> InstanceStatus:
        def check() -> InstanceStatus | None:
            status = self.store.get(name)
            return status if status is not None and status.phase.value == phase else None

        result: InstanceStatus = await eventually(check, within=within, what=f"{name} {phase}")
        return result


def _port_recorded(part: Part, ports: list[int]) -> Part:
    async def run(controller: Controller, *, task_status: TaskStatus[int]) -> None:
        async with anyio.create_task_group() as tg:
            port: int = await tg.start(part, controller)
            ports.append(port)
            task_status.started(port)

    return run


class _PortsRecorded(FrontEnds):
    """`run`'s front ends, each reporting the port it bound into `ports`, and the data plane
    they built into `planes`."""

    def __init__(self, settings: Settings, ports: list[int], planes: list[DataPlane]) -> None:
        super().__init__(settings)
        self.ports = ports
        self.planes = planes

    def build(self, table: RoutingTable, store: StatusStore) -> tuple[DataPlaneRunner, list[Part]]:
        runner, parts = super().build(table, store)
        self.planes.append(runner.plane)
        return runner, [_port_recorded(p, self.ports) for p in parts]


@asynccontextmanager
async def reconciler(
    settings: Settings, state: str | None = None, *, with_front_ends: bool = False
) -> AsyncIterator[Harness]:
    """A running reconciler (controller + watcher, and with `with_front_ends` the REST API and
    the data plane of `tei-reconciler run`); on exit it stops every instance."""
    state_file = Path(settings.state_file)
    if state is not None:
        write_atomic(state_file, state)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    store, table = StatusStore(), RoutingTable()
    ports: list[int] = []
    planes: list[DataPlane] = []
    # As `run` builds them (the data plane its settings choose, which drains what it stops).
    front = _PortsRecorded(settings, ports, planes) if with_front_ends else None
    try:
        async with anyio.create_task_group() as tg:
            controller: Controller = await tg.start(
                lambda task_status: serve(
                    settings,
                    store=store,
                    table=table,
                    front=front,
                    handle_signals=False,
                    task_status=task_status,
                )
            )
            try:
                harness = Harness(controller, store, table)
                harness.ports = ports
                harness.planes = planes
                yield harness
            finally:
                tg.cancel_scope.cancel()
    finally:
        leftovers = (
            children(Controller.owner_of(settings), data_plane=True)
            if settings.on_shutdown == "stop"
            else []
        )
        for proc in leftovers:
            proc.kill()


def script(tmp: Path, name: str, body: str) -> Path:
    """An executable Python script standing in for TEI."""
    path = tmp / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path
