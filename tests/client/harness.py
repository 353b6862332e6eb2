"""A real REST API for the client commands to talk to, and a way to run those commands.

The API is the project's own app served by hypercorn on 127.0.0.1 port 0, over a real state
file in a tmp dir; the status store stands in for the controller and is filled by hand. Each
client command runs as a real `python -m tei_reconciler` child process.
"""

from __future__ import annotations

import os
import ssl as ssl_
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from starlette.middleware import Middleware

from tei_reconciler.api import PlannedAction, create_app, serve_api
from tei_reconciler.api.context import ModelCommands
from tei_reconciler.desired.spec import DesiredState, InstanceSpec, spec_hash
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

from support.waiting import DEADLINE


def preview(desired: DesiredState) -> list[PlannedAction]:
    """The controller's dry-run planner, as far as the client can tell: start everything."""
    return [
        PlannedAction(instance=name, action="start", reason="desired running, no process")
        for name in sorted(desired.instances)
    ]


@dataclass
class Server:
    url: str
    statefile: StateFile
    store: StatusStore
    runtime: Path

    def spec(self, name: str) -> InstanceSpec:
        return self.statefile.load().instances[name]

    def observe(self, name: str, phase: Phase, **fields: object) -> InstanceStatus:
        """Record a status for `name` as the controller would, for its current spec."""
        values: dict[str, object] = {
            "name": name,
            "spec": self.spec(name),
            "phase": phase,
            "port": self.spec(name).port or 8080,
            "prometheus_port": 9100,
        }
        if phase is Phase.RUNNING:
            values |= {
                "pid": 4242,
                "created_at": 1_700_000_000.0,
                "ready_since": 1_700_000_001.0,
                "spec_hash": spec_hash(values["spec"]),  # type: ignore[arg-type]
            }
        values.update(fields)
        status = InstanceStatus(**values)  # type: ignore[arg-type]
        self.store.put(status)
        return status


@asynccontextmanager
async def served(
    tmp_path: Path,
    state: str = "",
    *,
    ssl: ssl_.SSLContext | None = None,
    middleware: Sequence[Middleware] = (),
    models: ModelCommands | None = None,
    store: StatusStore | None = None,
) -> AsyncIterator[Server]:
    runtime = tmp_path / "runtime"
    (runtime / "logs").mkdir(parents=True, exist_ok=True)
    settings = Settings(runtime_dir=str(runtime), instance_port_range=(8080, 8090))
    path = tmp_path / "state.toml"
    path.write_text(state)
    statefile = StateFile(path, reserved_ports=settings.reserved_ports)
    store = store or StatusStore()
    app = create_app(
        statefile=statefile,
        store=store,
        settings=settings,
        on_change=lambda: None,
        preview=preview,
        middleware=middleware,
        models=models,
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_api, app, host="127.0.0.1", port=0, grace=1.0, ssl=ssl))
        try:
            yield Server(f"http://127.0.0.1:{port}", statefile, store, runtime)
        finally:
            tg.cancel_scope.cancel()


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEI_RECONCILER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tei_reconciler", *args]


async def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run one client command to completion; returns its exit status and text output."""
    with anyio.fail_after(DEADLINE):
        done = await anyio.run_process(argv(*args), check=False, env=client_env(), cwd=cwd)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


class Running:
    """A client command left running (`logs -f`, `wait`), read as its output arrives."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = TextReceiveStream(process.stdout)
        self.output = ""
        self.errors = ""

    async def read_until(self, text: str) -> str:
        """Output so far, once it contains `text` (fails after the deadline)."""
        with anyio.fail_after(DEADLINE):
            while text not in self.output:
                self.output += await self._stdout.receive()
        return self.output

    async def finish(self) -> int:
        """Read the rest of the output (stderr into `errors`) and the exit status."""
        assert self.process.stderr is not None
        with anyio.fail_after(DEADLINE):
            async for chunk in self._stdout:
                self.output += chunk
            async for text in TextReceiveStream(self.process.stderr):
                self.errors += text
            return await self.process.wait()


@asynccontextmanager
async def running(*args: str) -> AsyncIterator[Running]:
    process = await anyio.open_process(argv(*args), env=client_env())
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
        await process.aclose()


def instances(names: Sequence[str]) -> str:
    """A state file with one hash-model instance per name, on ports from 8081."""
    return "".join(
        f'[instances.{n}]\nmodel_id = "hash/384"\ngpu = "none"\nport = {8081 + i}\n\n'
        for i, n in enumerate(names)
    )
