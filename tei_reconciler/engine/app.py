"""The engine's lifecycle, in TEI's order: load, warm up, bind, log "Ready", serve, drain.

The port opens only after the model answered a forward pass, so "connection refused" means
"not ready yet", as with TEI. SIGTERM or SIGINT stops accepting and waits for in-flight
requests and streams to finish (TEI has no drain timeout either), then the process exits 0.
Fatal start errors surface as `StartupError` and become TEI's "Error: ..." with status 1.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from argparse import Namespace
from functools import partial

import anyio
from anyio.abc import SocketAttribute, TaskStatus

from tei_reconciler.engine.faults import Faults
from tei_reconciler.engine.infer import Infer, Limits
from tei_reconciler.engine.logs import LOGGER
from tei_reconciler.engine.metrics import Metrics
from tei_reconciler.engine.prom import serve_prometheus
from tei_reconciler.engine.types import Backend, EngineError, StartupError

_DRAIN_FOREVER = 365 * 24 * 3600.0
_FAULT_GRACE = 1.0


def load_backend(args: Namespace) -> Backend:
    """`hash/...` stand-ins, else a real ONNX model (packaged, a local path or cached)."""
    model_id: str = args.model_id
    if model_id.startswith("hash/"):
        from tei_reconciler.engine.hash_backend import HashBackend  # noqa: PLC0415 - lazy

        return HashBackend(model_id)
    from tei_reconciler.engine.layout import resolve  # noqa: PLC0415 - lazy
    from tei_reconciler.engine.onnx_backend import OnnxBackend  # noqa: PLC0415 - lazy

    layout = resolve(
        model_id,
        revision=args.revision,
        cache_flag=args.huggingface_hub_cache,
        pooling=args.pooling,
    )
    LOGGER.info(
        "Starting ONNX model from %s (%s pooling, max input length %d)",
        layout.source,
        layout.pooling,
        layout.max_input_length,
    )
    return OnnxBackend(layout, threads=args.inference_threads)


def bind_host(hostname: str) -> str:
    """TEI binds 0.0.0.0 (with a warning) when the hostname is not an IP literal."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        LOGGER.warning("Invalid hostname `%s`, defaulting to 0.0.0.0", hostname)
        return "0.0.0.0"


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Stop:
    """Who asked the engine to stop, and with which exit status."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.code = 0
        self.grace = _DRAIN_FOREVER

    def request(self, code: int = 0, grace: float = _DRAIN_FOREVER) -> None:
        if not self.event.is_set():
            self.code, self.grace = code, grace
            self.event.set()


async def run(args: Namespace, faults: Faults) -> int:
    metrics = Metrics()
    stop = _Stop()
    answered = 0

    def on_request() -> None:
        nonlocal answered
        answered += 1
        if faults.exit_after_requests is not None and answered >= faults.exit_after_requests:
            LOGGER.warning("fault injection: exiting after %d requests", answered)
            stop.request(faults.exit_code, _FAULT_GRACE)

    backend = load_backend(args)
    limits = Limits(
        max_concurrent_requests=args.max_concurrent_requests,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_client_batch_size=args.max_client_batch_size,
        auto_truncate=args.auto_truncate,
    )
    if not args.auto_truncate and backend.max_input_length > args.max_batch_tokens:
        raise StartupError(
            f"`max_batch_tokens` must be larger or equal than the model's max input length "
            f"({backend.max_input_length}) when `auto_truncate` is false"
        )
    infer = Infer(
        backend,
        limits,
        metrics=metrics,
        faults=faults,
        dynamic_batching=not args.disable_dynamic_batching,
        prompts=backend.prompts,
        default_prompt=args.default_prompt,
        on_request=on_request,
    )
    if args.default_prompt_name is not None:
        try:
            infer.tokenize("", add_special_tokens=False, prompt_name=args.default_prompt_name)
        except EngineError as exc:
            raise StartupError(exc.message.removeprefix("Input validation error: ")) from exc
    LOGGER.info("Warming up model")
    await infer.warmup()
    if faults.ready_delay:
        await anyio.sleep(faults.ready_delay)
    if faults.start_error is not None:
        raise StartupError(f"fault injection: {faults.start_error}")

    host = bind_host(args.hostname)
    try:
        prom_listener = await anyio.create_tcp_listener(
            local_host=host, local_port=args.prometheus_port
        )
    except OSError as exc:
        raise StartupError(f"failed to build prometheus recorder: {exc}") from exc

    async with anyio.create_task_group() as tg:
        await tg.start(infer.batcher.serve)
        await tg.start(_watch_signals, stop, faults)  # handled before the port answers
        if faults.exit_after_secs is not None:
            tg.start_soon(_exit_after, stop, faults)
        if args.http:
            await prom_listener.aclose()  # TEI's HTTP build binds the port, then drops it
            # hypercorn runs in a child task: its asyncio.TaskGroup leaves the task it ran in
            # unfit for anyio's cancellation, so that task must be done before the cancel.
            served = anyio.Event()
            tg.start_soon(
                partial(_serve_http, args, infer, host, stop=stop, faults=faults, served=served)
            )
            await served.wait()
        else:
            tg.start_soon(serve_prometheus, prom_listener, metrics, faults)
            prom_port = prom_listener.extra(SocketAttribute.local_port)  # noqa: S610
            LOGGER.info("Serving Prometheus metrics: %s", _addr(host, prom_port))
            await _serve_grpc(args, infer, host, stop, faults)
        tg.cancel_scope.cancel()
    return stop.code


async def _serve_grpc(
    args: Namespace, infer: Infer, host: str, stop: _Stop, faults: Faults
) -> None:
    from tei_reconciler.engine.grpc_server import build_server, info_response  # noqa: PLC0415 - lazy

    server = await build_server(
        infer, info_response(args, infer), api_key=args.api_key, faults=faults
    )
    addr = _addr(host, args.port)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise StartupError(f"Could not bind TCP Listener on {addr}") from exc
    LOGGER.info("Starting gRPC server: %s", _addr(host, port))  # the port bound (--port 0)
    await server.start()
    LOGGER.info("Ready")
    await stop.event.wait()
    await server.stop(stop.grace)


async def _serve_http(
    args: Namespace, infer: Infer, host: str, *, stop: _Stop, faults: Faults, served: anyio.Event
) -> None:
    from tei_reconciler.engine.http_server import serve_http  # noqa: PLC0415 - lazy

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, args.port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise StartupError(f"Could not bind TCP Listener on {_addr(host, args.port)}") from exc
    LOGGER.info("Starting HTTP server: %s", _addr(host, sock.getsockname()[1]))
    try:
        await serve_http(args, infer, sock, stop.event, faults, ready=lambda: LOGGER.info("Ready"))
    finally:
        served.set()


async def _watch_signals(
    stop: _Stop, faults: Faults, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        async for signum in received:
            if faults.signal_file is not None:
                with open(faults.signal_file, "a") as record:  # noqa: ASYNC230 (one short line)
                    record.write(f"{signal.Signals(signum).name}\n")
            if signum == signal.SIGTERM and faults.ignore_sigterm:
                LOGGER.warning("fault injection: SIGTERM ignored")
                continue
            if not stop.event.is_set():
                LOGGER.info("signal received, starting graceful shutdown")
            stop.request()


async def _exit_after(stop: _Stop, faults: Faults) -> None:
    assert faults.exit_after_secs is not None
    await anyio.sleep(faults.exit_after_secs)
    LOGGER.warning("fault injection: exiting after %s seconds", faults.exit_after_secs)
    stop.request(faults.exit_code, _FAULT_GRACE)
