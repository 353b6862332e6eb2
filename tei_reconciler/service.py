"""`tei-reconciler run`: the composition root.

Everything a running reconciler is made of is built here (the control loop's parts through
`build.build_controller`, the front ends, their auth and the data plane in `FrontEnds`) and
handed to the components, which never construct their collaborators. One anyio task group on
the asyncio backend (grpc.aio and hypercorn need asyncio) runs the controller, the state file
watcher and the front ends (the REST API and the data plane, Envoy or the grpcio router; tests
hand in parts of their own as `extra`), all sharing one status store and one routing table.
SIGTERM and SIGINT cancel the group; the controller then stops every instance in parallel
within the grace period, or leaves them running for the next reconciler (`on_shutdown =
"keep"`), Envoy included.

Every part runs for the life of the process (`tasks.essential`): one that returns or fails
is a crash of the whole process (exit status 1, one log line naming it), never a process
that keeps answering `/health` with a dead control loop. A crash leaves the instances
running, as a kill -9 would, for the restarted reconciler to adopt.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio import CancelScope
from anyio.abc import TaskStatus

from tei_reconciler._types import SystemClock
from tei_reconciler.api import create_app, serve_api
from tei_reconciler.auth import build_grpc_auth, build_rest_auth
from tei_reconciler.build import build_controller, build_models
from tei_reconciler.control.controller import Controller
from tei_reconciler.control.watcher import watch_state_file
from tei_reconciler.dataplane.binary import choose
from tei_reconciler.dataplane.serve import DataPlaneRunner
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.drivers.family import become_subreaper
from tei_reconciler.errors import AuthConfigError, DataPlaneError, SpecError, TeiReconcilerError
from tei_reconciler.paths import RuntimeDir
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings, load_settings
from tei_reconciler.store import StatusStore
from tei_reconciler.tasks import PartEnded, essential
from tei_reconciler.traffic import TrafficRing

log = logging.getLogger("tei_reconciler")

#: A front end run beside the controller: `part(controller, task_status=...)` reports
#: `started()` once it listens, and receives the controller for `mark_dirty`, `preview`, the store.
Part = Callable[..., Coroutine[Any, Any, None]]


class AlreadyRunning(TeiReconcilerError):
    """Another reconciler holds this runtime directory: two would fight over the instances."""


@contextmanager
def exclusive_runtime(runtime_dir: Path) -> Iterator[None]:
    """Hold `<runtime_dir>/reconciler.lock` for the life of the process (released by the OS
    even on SIGKILL, so a crashed reconciler never blocks its successor)."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(RuntimeDir(runtime_dir).lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(
                f"another tei-reconciler (pid {holder}) is running with runtime_dir {runtime_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def _cancel_on_signal(
    scope: CancelScope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s received: shutting down", signal.Signals(signum).name)
            scope.cancel()
            return


async def serve(
    settings: Settings,
    *,
    store: StatusStore | None = None,
    table: RoutingTable | None = None,
    front: FrontEnds | None = None,
    extra: Sequence[Part] = (),
    handle_signals: bool = True,
    task_status: TaskStatus[Controller] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the controller, the watcher, the front ends and `extra` until cancelled or
    signalled.

    The front ends listen before the controller touches any instance, so the API answers
    (`/ready` says not yet) while adoption and the first starts are under way, and a port
    that cannot be bound stops the reconciler before it has changed anything. The data plane
    drains an instance before the controller stops it."""
    store = store or StatusStore()
    table = table or RoutingTable(settings.default_instance)
    parts = list(extra)
    drain = None
    if front is not None:
        runner, front_parts = front.build(table, store)
        parts = [*front_parts, *parts]
        drain = runner.plane.drain
    registry, glue = build_models(settings, store=store, env=os.environ)
    controller = build_controller(settings, store=store, table=table, models=glue, drain=drain)
    registry.changed = controller.mark_dirty
    with exclusive_runtime(Path(settings.runtime_dir)):
        async with anyio.create_task_group() as tg:
            if handle_signals:
                await tg.start(_cancel_on_signal, tg.cancel_scope)
            crashed = controller.abandon  # a crash leaves every instance to the next reconciler
            await tg.start(partial(essential, "the model registry", registry.run, crashed=crashed))
            for part in parts:
                await tg.start(
                    partial(essential, _part_name(part), part, controller, crashed=crashed)
                )
            # The watcher first: an edit made while the first pass runs is not left to the resync.
            watcher = partial(watch_state_file, Path(settings.state_file), controller.mark_dirty)
            await tg.start(partial(essential, "the state file watcher", watcher, crashed=crashed))
            await tg.start(partial(essential, "the controller", controller.run, crashed=crashed))
            task_status.started(controller)


def _part_name(part: Part) -> str:
    return _PART_NAMES.get(part.__name__, part.__name__)


_PART_NAMES = {"rest_api": "the REST API", "data_plane": "the data plane"}


class FrontEnds:
    """The REST API and the data plane (DESIGN.md section 10), each with its auth.

    Built from the settings before anything listens: the data plane is chosen (`data_plane =
    "envoy"` without a binary stops here) and the auth files are loaded, so a broken
    certificate or tokens file fails startup instead of serving unauthenticated. `build`
    then makes the data plane over the shared table and store, and the parts for `serve`:
    the data plane records every call in the traffic ring the API's dashboard reads, and the
    API asks it whether traffic reaches an instance (`?wait=ready`, `routed_by`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.choice = choose(settings.data_plane, settings.envoy_binary, settings.instance_host)
        self.middleware, self.ssl_context = build_rest_auth(settings)
        build_grpc_auth(settings)  # the data plane loads them again; fail before anything runs
        self.traffic = TrafficRing()

    def build(self, table: RoutingTable, store: StatusStore) -> tuple[DataPlaneRunner, list[Part]]:
        settings = self.settings
        runner = DataPlaneRunner(
            settings,
            table,
            store=store,
            clock=SystemClock(),
            choice=self.choice,
            traffic=self.traffic,
        )

        async def rest_api(
            controller: Controller, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            app = create_app(
                statefile=StateFile(
                    Path(settings.state_file),
                    reserved_ports=settings.reserved_ports,
                    max_instances=settings.max_instances,
                    max_bytes=settings.max_state_bytes,
                ),
                store=controller.store,
                settings=settings,
                on_change=controller.mark_dirty,
                preview=controller.preview,
                middleware=self.middleware,
                traffic=self.traffic,
                models=controller.models.registry if controller.models is not None else None,
                data_plane=runner.plane,
            )
            await serve_api(
                app,
                host=settings.api_host,
                port=settings.api_port,
                ssl=self.ssl_context,
                task_status=task_status,
            )

        async def data_plane(
            controller: Controller, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            await runner.serve(task_status=task_status)

        return runner, [rest_api, data_plane]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tei-reconciler run",
        description="Make the TEI processes on this host match the state file, and keep them so.",
    )
    parser.add_argument("--state", type=Path, help="the state file (desired state)")
    parser.add_argument("--config", type=Path, help="the manager's TOML configuration")
    parser.add_argument("--api-port", type=int, help="REST API port")
    parser.add_argument("--grpc-port", type=int, help="gRPC router port")
    parser.add_argument("--host", help="address the REST API and gRPC router listen on")
    return parser


def settings_from_args(argv: list[str]) -> Settings:
    """Parse `run`'s flags and resolve the settings (flags > env > config file > defaults)."""
    args = _parser().parse_args(argv)
    cli: dict[str, object] = {}
    if args.state is not None:
        cli["state_file"] = str(args.state)
    if args.api_port is not None:
        cli["api_port"] = args.api_port
    if args.grpc_port is not None:
        cli["grpc_port"] = args.grpc_port
    if args.host is not None:
        cli["api_host"] = cli["grpc_host"] = args.host
    return load_settings(cli, os.environ, args.config)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside nested task groups' exception groups."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def main(argv: list[str], *, extra: Sequence[Part] = ()) -> int:
    """`tei-reconciler run`; `extra` parts run beside the front ends (for tests)."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one line per event otherwise
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Envoy's admin: a line per request
    try:
        settings = settings_from_args(argv)
        front = FrontEnds(settings)
    except SpecError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    except (AuthConfigError, DataPlaneError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return run_service(settings, front, extra)


def run_service(settings: Settings, front: FrontEnds, extra: Sequence[Part] = ()) -> int:
    """Serve until signalled (exit status 0). A part that ends or fails while the process
    runs is a crash: one log line says which and why, the instances are left running for the
    next reconciler to adopt, and the exit status is 1, so a supervisor (systemd, the
    kubelet) restarts the process instead of it living on half dead."""
    failure: str | None = None
    crashed = False
    become_subreaper()  # daemons of instances stay ours to stop when their parent is gone
    try:
        anyio.run(partial(serve, settings, front=front, extra=extra), backend="asyncio")
    except* (AlreadyRunning, DataPlaneError, OSError) as group:  # nothing was changed
        failure = "; ".join(str(exc) for exc in _leaves(group))
    except* PartEnded as group:
        log.critical("%s: exiting (status 1) to be restarted", _describe(group))
        crashed = True
    except* Exception as group:
        log.critical(
            "crashed: %s: exiting (status 1) to be restarted", _describe(group), exc_info=group
        )
        crashed = True
    if failure is not None:
        sys.stderr.write(f"error: {failure}\n")
    return 1 if failure is not None or crashed else 0


def _describe(group: BaseExceptionGroup[BaseException]) -> str:
    return "; ".join(str(exc) or type(exc).__name__ for exc in _leaves(group))
