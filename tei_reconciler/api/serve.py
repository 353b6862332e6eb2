"""Serve the API with hypercorn inside the caller's task group.

`serve_api` binds the socket itself (port 0 allowed), reports the bound port through
`task_status.started(port)` once the app's lifespan has started, and owns shutdown: hypercorn
gets a `shutdown_trigger`, never signal handlers (the service decides what a signal means).
Cancelling the task, or the trigger returning, shuts down gracefully: stop accepting, end
live event streams, let requests in flight finish within `grace` seconds, run the lifespan
shutdown. That part runs shielded, so a cancelled service still closes its port cleanly.
"""

from __future__ import annotations

import logging
import socket
import ssl as ssl_
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class _Config(Config):
    """A hypercorn Config serving one socket we bound, with an SSLContext we built."""

    def __init__(self, sock: socket.socket, context: ssl_.SSLContext | None) -> None:
        super().__init__()
        self._sock = sock
        self._context = context

    def create_sockets(self) -> Sockets:
        if self._context is not None:
            return Sockets([self._sock], [], [])
        return Sockets([], [self._sock], [])

    @property
    def ssl_enabled(self) -> bool:
        return self._context is not None

    def create_ssl_context(self) -> ssl_.SSLContext | None:
        return self._context


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        message = f"REST API cannot listen on {host}:{port}: {exc.strerror}"
        raise OSError(exc.errno, message) from exc
    return sock


def _begin_shutdown(app: ASGIApp) -> None:
    """End the app's live streams (SSE) so they do not hold the graceful shutdown."""
    ctx: Any = getattr(getattr(app, "state", None), "ctx", None)
    closing = getattr(ctx, "closing", None)
    if isinstance(closing, anyio.Event):
        closing.set()


async def serve_api(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ssl: ssl_.SSLContext | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    grace: float = 5.0,
) -> None:
    """Serve `app` on host:port until cancelled or until `shutdown_trigger` returns."""
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    config = _Config(sock, ssl)
    config.accesslog = None
    # A Logger (not "-") makes hypercorn log through the application's logging setup instead
    # of adding a stderr handler of its own, which printed every line twice.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = grace
    started = anyio.Event()
    stop = anyio.Event()

    async def app_with_startup(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await app(scope, receive, send_)

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            try:
                await serve(app_with_startup, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
            finally:
                sock.close()
        if not stop.is_set():  # the server ended on its own: this part must not go on without it
            raise RuntimeError("the REST API server stopped on its own")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                await started.wait()
                scheme = "https" if ssl is not None else "http"
                where = f"[{host}]" if ":" in host else host
                log.info("REST API listening on %s://%s:%d (dashboard: /ui/)", scheme, where, bound)
                task_status.started(bound)
                await (shutdown_trigger or anyio.sleep_forever)()
            finally:
                _begin_shutdown(app)
                stop.set()
    finally:
        sock.close()
