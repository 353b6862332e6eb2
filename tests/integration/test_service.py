"""`tei-reconciler run` refuses to start rather than fight: a held port or a second
reconciler on the same runtime directory stops it before any instance is touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tei_reconciler.drivers.process import owner_digest
from tei_reconciler.service import AlreadyRunning, exclusive_runtime

from .reconciler_harness import instance_toml
from support.net import port_base
from support.processes import children
from support.waiting import DEADLINE


def test_a_second_reconciler_on_the_same_runtime_dir_is_refused_with_the_holders_pid(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "runtime"
    with (
        exclusive_runtime(runtime),
        pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"),
        exclusive_runtime(runtime),
    ):
        pass
    with exclusive_runtime(runtime):  # released when the holder ends
        pass


def run_once(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`tei-reconciler run` with one instance in its state file, until it exits."""
    state = tmp_path / "state.toml"
    state.write_text(instance_toml("alpha"))
    environ = {
        **os.environ,
        "TEI_RECONCILER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "TEI_RECONCILER_API_PORT": "0",
        "TEI_RECONCILER_TEI_BINARY": "builtin",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "run", "--state", str(state), *argv],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_held_api_port_stops_the_reconciler_before_it_starts_any_instance(
    tmp_path: Path,
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_once(tmp_path, "--api-port", str(port), TEI_RECONCILER_GRPC_PORT="0")
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert str(port) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runtime" / "logs" / "alpha.log").exists()


#: `tei-reconciler run` with one more part that ends once `alpha` is Ready, as a part of the
#: process ending unexpectedly would (the controller, the REST API, the router).
_ENDING_PART = """
import sys

import anyio

from tei_reconciler import service


async def doomed(controller, *, task_status):
    task_status.started()
    while not ((status := controller.store.get("alpha")) and status.ready):
        await anyio.sleep(0.05)


sys.exit(service.main(sys.argv[1:], extra=[doomed]))
"""


def test_a_part_that_ends_makes_run_exit_non_zero_and_leaves_the_instances_to_adopt(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.toml"
    state.write_text(instance_toml("alpha"))
    script = tmp_path / "run_with_a_doomed_part.py"
    script.write_text(_ENDING_PART)
    base = port_base()
    env = {
        **os.environ,
        "TEI_RECONCILER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "TEI_RECONCILER_TEI_BINARY": "builtin",
        "TEI_RECONCILER_INSTANCE_PORT_RANGE": f"{base}-{base + 200}",
        "TEI_RECONCILER_PROMETHEUS_PORT_RANGE": f"{base + 200}-{base + 400}",
        "TEI_RECONCILER_HEALTH_INTERVAL_SECS": "0.2",
    }
    argv = ["--state", str(state), "--api-port", "0", "--grpc-port", "0"]
    owner = owner_digest(state)
    try:
        result = subprocess.run(
            [sys.executable, str(script), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        (line,) = [x for x in result.stderr.splitlines() if "CRITICAL" in x]
        assert "doomed ended unexpectedly: exiting (status 1) to be restarted" in line
        assert "leaving 1 instance(s) running for the next reconciler" in result.stderr
        assert len(children(owner, "alpha")) == 1  # still serving, for the next one to adopt
    finally:
        for child in children(owner):
            child.kill()


def test_data_plane_envoy_without_its_binary_stops_run_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "envoy"
    result = run_once(
        tmp_path,
        "--grpc-port",
        "0",
        TEI_RECONCILER_DATA_PLANE="envoy",
        TEI_RECONCILER_ENVOY_BINARY=str(missing),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: data_plane = \"envoy\", but no Envoy binary at envoy_binary = '{missing}'"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runtime" / "logs" / "alpha.log").exists()


def test_a_held_grpc_port_stops_the_reconciler_on_either_data_plane(
    tmp_path: Path, data_plane: str
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_once(tmp_path, "--grpc-port", str(port), TEI_RECONCILER_DATA_PLANE=data_plane)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(port) in line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runtime" / "logs" / "alpha.log").exists()
