"""Instance logs are rotated on a clock of their own: however fast a child writes and however
quiet the control loop is, `log_max_bytes` holds within seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from .reconciler_harness import fast_settings, instance_toml, reconciler, script
from support.waiting import eventually

pytestmark = pytest.mark.anyio

#: A TEI that never serves and writes without pause.
CHATTY = """
import sys
import time

line = "x" * 99 + "\\n"
while True:
    sys.stdout.write(line * 10)
    sys.stdout.flush()
    time.sleep(0.01)
"""


async def test_a_chatty_instance_log_is_rotated_while_no_pass_runs(tmp_path: Path) -> None:
    binary = script(tmp_path, "chatty-tei", CHATTY)
    settings = fast_settings(
        tmp_path,
        tei_binary=str(binary),
        log_max_bytes=4096,
        log_backups=2,
        resync_interval_secs=3600.0,  # no resync, no probe success, no edit: no pass at all
        startup_timeout_secs=3600.0,
    )
    async with reconciler(settings, instance_toml("alpha")) as h:
        await eventually(lambda: (s := h.status("alpha")) and s.pid, what="alpha's process")
        passes = h.controller.passes
        logs = Path(settings.runtime_dir) / "logs"
        await eventually((logs / "alpha.log.2").exists, what="a second rotation")
        assert (logs / "alpha.log.1").stat().st_size > settings.log_max_bytes
        assert not (logs / "alpha.log.3").exists()  # log_backups
        assert h.controller.passes == passes  # the rotations came from no pass
