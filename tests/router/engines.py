"""Built-in engine processes on free local ports, for end-to-end router tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress

import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

START_DEADLINE_SECS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECS
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tei_pb2_grpc.InfoStub(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"engine exited with {process.returncode} before ready")
            try:
                stub.Info(tei_pb2.InfoRequest(), timeout=1.0, wait_for_ready=True)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            else:
                return


@contextmanager
def engines(
    models: Mapping[str, str], env: Mapping[str, str] | None = None
) -> Iterator[dict[str, int]]:
    """Start one engine per name -> model id; yields name -> gRPC port; kills them all."""
    processes: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    try:
        for name, model in models.items():
            port = free_port()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tei_reconciler",
                    "engine",
                    "--model-id",
                    model,
                    "--hostname",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--prometheus-port",
                    str(free_port()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
            processes.append(process)
            ports[name] = port
        for process, port in zip(processes, ports.values(), strict=True):
            _wait_ready(process, port)
        yield ports
    finally:
        for process in processes:
            with suppress(ProcessLookupError):
                process.kill()
        for process in processes:
            process.wait(timeout=30)
