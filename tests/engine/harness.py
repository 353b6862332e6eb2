"""Real engine processes on free ports for the engine's tests; every child is killed after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Engine:
    proc: subprocess.Popen[bytes]
    port: int
    prom_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, deadline_s: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited {self.proc.returncode}:\n{self.log()}")
            if port_open(self.port):
                return
            time.sleep(0.05)  # polling interval, bounded by the deadline
        raise AssertionError(f"engine not ready in {deadline_s}s:\n{self.log()}")

    def wait_exit(self, deadline_s: float = DEADLINE_S) -> int:
        return self.proc.wait(timeout=deadline_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE_S)


def spawn(
    model: str,
    *extra: str,
    faults: str | None = None,
    http: bool = False,
    env_extra: dict[str, str] | None = None,
) -> Engine:
    port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "TEI_ENGINE_FAULTS"}
    env.update(env_extra or {})
    if faults:
        env["TEI_ENGINE_FAULTS"] = faults
    handle, name = tempfile.mkstemp(prefix="engine-", suffix=".log")
    argv = [
        sys.executable, "-m", "tei_reconciler", "engine",
        "--model-id", model, "--hostname", "127.0.0.1",
        "--port", str(port), "--prometheus-port", str(prom_port),
        *(["--http"] if http else []), *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
    os.close(handle)
    return Engine(proc, port, prom_port, Path(name))


def run_engine(
    *argv: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the engine to its end (for start errors), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "engine", *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
        env={**os.environ, **(env_extra or {})},
    )


@contextmanager
def running(
    model: str,
    *extra: str,
    faults: str | None = None,
    http: bool = False,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Engine]:
    engine = spawn(model, *extra, faults=faults, http=http, env_extra=env_extra)
    try:
        engine.wait_ready()
        yield engine
    finally:
        engine.stop()
        engine.log_path.unlink(missing_ok=True)
