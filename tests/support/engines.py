"""Real built-in engine processes (`python -m tei_reconciler engine`) on free ports.

Every test that needs a TEI to talk to starts it here; each child's output goes to its own log
file, and every child is killed when its context ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from support.net import free_port, port_open
from support.waiting import DEADLINE, wait_until


@dataclass
class Engine:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    prom_port: int
    log_path: Path

    @property
    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def target(self) -> str:
        """`host:port` of its gRPC (or, with --http, HTTP) server."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._host}:{self.prom_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, within: float = DEADLINE) -> None:
        """Until the engine listens (it binds its port once the model is loaded)."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited {self.proc.returncode}:\n{self.log()}")
            return port_open(self.port, self.host)

        wait_until(up, f"the engine on port {self.port}", within=within, detail=self.log)

    def wait_exit(self, within: float = DEADLINE) -> int:
        return self.proc.wait(timeout=within)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)


class Options(TypedDict, total=False):
    faults: str | None  # TEI_ENGINE_FAULTS
    http: bool  # serve TEI's HTTP API instead of gRPC
    host: str  # --hostname (default 127.0.0.1)
    env: Mapping[str, str]  # more environment


def spawn(
    model: str,
    *flags: str,
    faults: str | None = None,
    http: bool = False,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
) -> Engine:
    """Start an engine for `model` with `flags`, not waiting for it."""
    port, prom_port = free_port(host), free_port(host)
    environ = {k: v for k, v in os.environ.items() if k != "TEI_ENGINE_FAULTS"}
    environ.update(env or {})
    if faults:
        environ["TEI_ENGINE_FAULTS"] = faults
    handle, name = tempfile.mkstemp(prefix="engine-", suffix=".log")
    argv = [
        sys.executable, "-m", "tei_reconciler", "engine",
        "--model-id", model, "--hostname", host,
        "--port", str(port), "--prometheus-port", str(prom_port),
        *(["--http"] if http else []), *flags,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=environ)
    os.close(handle)
    return Engine(proc, host, port, prom_port, Path(name))


def run_engine(
    *argv: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an engine to its end (for start errors), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "engine", *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        env={**os.environ, **(env or {})},
    )


@contextmanager
def running(model: str, *flags: str, **options: Unpack[Options]) -> Iterator[Engine]:
    """An engine that listens, for the duration of the block."""
    with engines({model: model}, *flags, **options) as ready:
        yield ready[model]


@contextmanager
def engines(
    models: Mapping[str, str], *flags: str, **options: Unpack[Options]
) -> Iterator[dict[str, Engine]]:
    """One listening engine per name -> model id, started together; all killed after."""
    with ExitStack() as stack:
        started: dict[str, Engine] = {}
        for name, model in models.items():
            engine = spawn(model, *flags, **options)
            stack.callback(engine.log_path.unlink, missing_ok=True)
            stack.callback(engine.stop)
            started[name] = engine
        for engine in started.values():
            engine.wait_ready()
        yield started
