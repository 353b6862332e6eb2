"""`tei-reconciler run`: the composition root.

One anyio task group on the asyncio backend (grpc.aio and hypercorn need asyncio) runs the
controller, the state file watcher and whatever front ends are handed in (`extra`: the REST
API and the gRPC router), all sharing one status store and one routing table. SIGTERM and
SIGINT cancel the group; the controller then stops every instance in parallel within the
grace period, or leaves them running for the next reconciler (`on_shutdown = "keep"`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio import CancelScope
from anyio.abc import TaskStatus

from tei_reconciler.controller import Controller
from tei_reconciler.errors import SpecError
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings, load_settings
from tei_reconciler.status import StatusStore
from tei_reconciler.watcher import watch_state_file

log = logging.getLogger("tei_reconciler")

#: A front end run beside the controller: receives it (for `mark_dirty`, `preview`, the store).
Part = Callable[[Controller], Coroutine[Any, Any, None]]


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
    extra: Sequence[Part] = (),
    handle_signals: bool = True,
    task_status: TaskStatus[Controller] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the controller, the watcher and `extra` until cancelled or signalled."""
    store = store or StatusStore()
    table = table or RoutingTable(settings.default_instance)
    controller = Controller(settings, store=store, table=table)
    async with anyio.create_task_group() as tg:
        if handle_signals:
            await tg.start(_cancel_on_signal, tg.cancel_scope)
        await tg.start(controller.run)
        await tg.start(partial(watch_state_file, Path(settings.state_file), controller.mark_dirty))
        for part in extra:
            tg.start_soon(part, controller)
        task_status.started(controller)


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


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = settings_from_args(argv)
    except SpecError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    anyio.run(partial(serve, settings), backend="asyncio")
    return 0
