"""Start failures found in review, with real processes: each names its cause plainly."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tei_reconciler.control.controller import Controller

from .reconciler_harness import (
    children,
    eventually,
    fast_settings,
    instance_toml,
    reconciler,
    script,
)

pytestmark = pytest.mark.anyio


def _not_a_program(tmp: Path) -> Path:
    """An executable file that the kernel cannot run (no shebang, not a binary)."""
    path = tmp / "tei-garbage"
    path.write_bytes(b"\x00\x01\x02 not a program\n")
    path.chmod(0o755)
    return path


async def test_a_binary_the_kernel_cannot_execute_is_a_clear_binary_failure(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path, tei_binary=str(_not_a_program(tmp_path)))
    async with reconciler(settings, instance_toml("alpha")) as h:
        failed = await h.phase_is("alpha", "Failed")
        assert failed.reason == "BinaryNotFound"
        assert "tei-garbage" in failed.message
        assert "Exec format error" in failed.message


WRAPPER = """
import subprocess, sys
sys.exit(subprocess.call([sys.executable, "-m", "tei_reconciler", "engine", *sys.argv[1:]]))
"""


async def test_an_instance_running_a_binary_other_than_configured_now_is_replaced_on_adoption(
    tmp_path: Path,
) -> None:
    """Upgrading TEI means pointing tei_binary elsewhere: kept processes of the old binary
    must not be adopted as if nothing changed."""
    owner = Controller.owner_of(fast_settings(tmp_path))
    try:
        async with reconciler(fast_settings(tmp_path, on_shutdown="keep"), instance_toml("a")) as h:
            old = await h.ready("a")
        assert old.pid is not None
        assert psutil.pid_exists(old.pid)
        new_binary = script(tmp_path, "tei-v2", WRAPPER)
        async with reconciler(fast_settings(tmp_path, tei_binary=str(new_binary))) as h:
            new = await eventually(
                lambda: (s := h.status("a")) is not None and s.ready and s.pid != old.pid and s,
                what="a Ready process of the new binary",
            )
            assert new.pid is not None
            assert str(new_binary) in psutil.Process(new.pid).cmdline()
            assert not psutil.pid_exists(old.pid) or psutil.Process(old.pid).status() == "zombie"
    finally:
        for proc in children(owner):
            proc.kill()
