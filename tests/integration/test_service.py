"""`tei-reconciler run` refuses to start rather than fight: a held port or a second
reconciler on the same runtime directory stops it before any instance is touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tei_reconciler.service import AlreadyRunning, exclusive_runtime

from .reconciler_harness import instance_toml


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


def test_a_held_api_port_stops_the_reconciler_before_it_starts_any_instance(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.toml"
    state.write_text(instance_toml("alpha"))
    runtime = tmp_path / "runtime"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {
            **os.environ,
            "TEI_RECONCILER_RUNTIME_DIR": str(runtime),
            "TEI_RECONCILER_GRPC_PORT": "0",
            "TEI_RECONCILER_TEI_BINARY": "builtin",
        }
        argv = ["run", "--state", str(state), "--api-port", str(port)]
        result = subprocess.run(
            [sys.executable, "-m", "tei_reconciler", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert str(port) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (runtime / "logs" / "alpha.log").exists()
