"""A real `tei-reconciler run` as a child process on 127.0.0.1 port 0, for tests that need
the whole program (the dashboard in a browser, the metrics a scrape sees).

Its settings come from `TEI_RECONCILER_*` variables (fast probes and backoff, a random port
range, the built-in engine); the REST API and gRPC ports are read from its log. Nothing here
waits by sleeping: every wait is a poll against a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tei_reconciler.drivers.process import owner_digest

from support.net import port_base
from support.waiting import DEADLINE, wait_until

_LISTENING = re.compile(r"REST API listening on (http://\S+?:\d+)")
_ROUTER = re.compile(r"data plane \w+ listening on \S+?:(\d+)")


class Reconciler:
    """A `tei-reconciler run` child process on 127.0.0.1 port 0, with its state file."""

    def __init__(
        self, root: Path, config: str | None = None, settings: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.config = config  # the --config TOML (e.g. [auth]), if any
        self.settings = settings or {}  # more TEI_RECONCILER_<KEY> settings (over the defaults)
        self.state_file = root / "state" / "state.toml"
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text("[instances]\n")
        self.log = root / "reconciler.log"
        self.url = ""
        self.grpc_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        base = port_base()
        settings = {
            "TEI_BINARY": "builtin",
            "RUNTIME_DIR": str(self.root / "runtime"),
            "INSTANCE_PORT_RANGE": f"{base}-{base + 200}",
            "PROMETHEUS_PORT_RANGE": f"{base + 200}-{base + 400}",
            "MAX_INSTANCES": "150",
            "HEALTH_INTERVAL_SECS": "0.5",
            "BACKOFF_INITIAL_SECS": "0.5",
            "BACKOFF_MAX_SECS": "2",
            "STOP_GRACE_SECS": "5",
            "HUGGINGFACE_HUB_CACHE": str(self.root / "hub"),  # never the user's own cache
            "HF_OFFLINE": "true",  # and never the real Hub
            **self.settings,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEI_RECONCILER_")}
        env.update({f"TEI_RECONCILER_{k}": v for k, v in settings.items()})
        return env

    def start(self) -> None:
        argv = [sys.executable, "-m", "tei_reconciler", "run", "--state", str(self.state_file)]
        argv += ["--api-port", "0", "--grpc-port", "0"]
        if self.config is not None:
            config = self.root / "config.toml"
            config.write_text(self.config)
            argv += ["--config", str(config)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.root
            )

        def listening() -> str | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"tei-reconciler run exited:\n{self.log.read_text()}")
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            return found.group(1) if found else None

        try:
            self.url = wait_until(listening, what="the REST API to listen")
            router = wait_until(
                lambda: _ROUTER.search(self.log.read_text()), what="the data plane to listen"
            )
        except BaseException:
            self.stop()  # a run that never came up must not outlive the test
            raise
        self.grpc_port = int(router.group(1))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # ---- the REST API, for setting the scene and checking results -------------------------
    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=DEADLINE + 15, headers=headers)

    def instance(self, name: str) -> dict[str, Any] | None:
        with self.api() as client:
            response = client.get(f"/instances/{name}")
        return response.json() if response.status_code == 200 else None

    def instances(self) -> list[dict[str, Any]]:
        with self.api() as client:
            response = client.get("/instances")
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body

    def wait_ready(self, name: str) -> dict[str, Any]:
        """Until `name` is Ready (and the reconciler still runs)."""

        def ready() -> dict[str, Any] | None:
            self.check_running()
            found = self.instance(name)
            return found if found is not None and found.get("ready") else None

        result: dict[str, Any] = wait_until(
            ready, f"{name} Ready", detail=lambda: str(self.instance(name))
        )
        return result

    def check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"tei-reconciler run exited {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    @property
    def owner(self) -> str:
        """The owner marker its children carry."""
        return owner_digest(self.state_file)

    def create(self, name: str, model_id: str = "hash/384", **fields: object) -> dict[str, Any]:
        with self.api() as client:
            response = client.post(
                "/instances", json={"name": name, "model_id": model_id, "gpu": "none", **fields}
            )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body
