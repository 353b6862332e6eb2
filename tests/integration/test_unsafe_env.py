"""A writer of the state cannot run code in a child through `env`: the refused variables never
reach a process, while the instance keeps running as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tei_reconciler.control.controller import Controller

from .reconciler_harness import (
    fast_settings,
    passes,
    reconciler,
    write_atomic,
)
from support.processes import children
from support.waiting import eventually

pytestmark = pytest.mark.anyio

#: One variable of each refused family (see tei_reconciler/desired/unsafe_env.py).
ONE_PER_FAMILY = [
    "LD_PRELOAD",
    "PATH",
    "BASH_ENV",
    "PYTHONPATH",
    "PERL5OPT",
    "RUBYOPT",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "LUA_INIT",
    "CUDA_INJECTION64_PATH",
    "OPENSSL_CONF",
]


def sitecustomize(tmp: Path) -> tuple[Path, Path]:
    """A directory whose sitecustomize.py leaves a marker file in any Python started with it
    on PYTHONPATH: the attack this rule stops."""
    payload = tmp / "payload"
    payload.mkdir()
    marker = tmp / "pwned"
    (payload / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return payload, marker


def state(env: dict[str, str]) -> str:
    inner = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return f'[instances.alpha]\nmodel_id = "hash/8"\nenv = {{ {inner} }}\n'


async def test_a_state_file_setting_loader_or_interpreter_variables_never_reaches_the_child(
    tmp_path: Path,
) -> None:
    payload, marker = sitecustomize(tmp_path)
    # The payload is real: any Python child started with this PYTHONPATH runs it.
    subprocess.run(  # noqa: ASYNC221 (before anything runs; a short child)
        [sys.executable, "-c", "pass"], env={**os.environ, "PYTHONPATH": str(payload)}, check=True
    )
    assert marker.exists()
    marker.unlink()

    settings = fast_settings(tmp_path)
    async with reconciler(settings, state({"SAFE_MARK": "1"})) as h:
        before = await h.ready("alpha")
        assert before.pid is not None
        assert psutil.Process(before.pid).environ()["SAFE_MARK"] == "1"  # env does reach it

        refused = {name: str(payload) for name in ONE_PER_FAMILY}
        write_atomic(h.state_file, state({"SAFE_MARK": "2", **refused}))
        errors = await eventually(lambda: h.store.spec_errors, what="the file refused")
        for name in ONE_PER_FAMILY:
            assert any(f"env may not set {name}: " in e for e in errors), name
        await passes(h.controller, 3)

        after = h.status("alpha")
        assert after is not None
        assert after.pid == before.pid
        assert after.ready
        for child in children(Controller.owner_of(settings)):
            env = child.environ()
            assert env["SAFE_MARK"] == "1"
            assert env.get("PYTHONPATH") != str(payload)
            assert not {k for k in ONE_PER_FAMILY if k != "PATH"} & set(env)
            assert env.get("PATH") != str(payload)
        assert not marker.exists()
