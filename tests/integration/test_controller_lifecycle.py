"""Edit the state file; the real engine processes follow: start, replace, stop, remove."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from tei_reconciler.control.controller import Controller

from .reconciler_harness import (
    fast_settings,
    instance_toml,
    passes,
    reconciler,
    write_atomic,
)
from support.processes import children
from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_an_instance_added_to_the_file_starts_and_becomes_ready(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    async with reconciler(settings, "") as h:
        write_atomic(h.state_file, instance_toml("alpha", "hash/384"))
        status = await h.ready("alpha")
        assert status.pid is not None
        assert status.port is not None
        argv = psutil.Process(status.pid).cmdline()
        assert argv[argv.index("--port") + 1] == str(status.port)
        assert argv[argv.index("--hostname") + 1] == "127.0.0.1"
        assert "--json-output" in argv
        endpoint = h.table.get("alpha")
        assert endpoint is not None
        assert endpoint.ready
        assert endpoint.port == status.port
        conditions = {c.type: c.status for c in status.conditions}
        assert conditions == {
            "Ready": "True",
            "Progressing": "False",
            "Degraded": "False",
            "SpecValid": "True",
        }


async def test_changing_a_field_rolls_to_a_new_process_with_the_new_argv(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    async with reconciler(settings, instance_toml("alpha")) as h:
        first = await h.ready("alpha")
        write_atomic(h.state_file, instance_toml("alpha", max_batch_tokens=2048))
        second = await eventually(
            lambda: (s := h.status("alpha")) is not None and s.ready and s.pid != first.pid and s,
            what="a new Ready process",
        )
        assert second.pid is not None
        argv = psutil.Process(second.pid).cmdline()
        assert argv[argv.index("--max-batch-tokens") + 1] == "2048"
        assert second.port != first.port  # it started beside the old one, on a fresh port
        endpoint = h.table.get("alpha")
        assert endpoint is not None
        assert endpoint.port == second.port
        await eventually(
            lambda: (
                not psutil.pid_exists(first.pid or 0)
                or psutil.Process(first.pid).status() == "zombie"
            ),
            what="the old process to be stopped",
        )


async def test_a_recreate_rollout_stops_the_old_process_first_and_keeps_the_port(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path)
    async with reconciler(settings, instance_toml("alpha", rollout="recreate")) as h:
        first = await h.ready("alpha")
        write_atomic(
            h.state_file, instance_toml("alpha", rollout="recreate", max_batch_tokens=2048)
        )
        second = await eventually(
            lambda: (s := h.status("alpha")) is not None and s.ready and s.pid != first.pid and s,
            what="a new Ready process",
        )
        assert (
            not psutil.pid_exists(first.pid or 0) or psutil.Process(first.pid).status() == "zombie"
        )
        assert second.port == first.port  # the auto-assigned port is sticky


async def test_a_stopped_instance_stops_and_stays_stopped(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, resync_interval_secs=0.2)
    async with reconciler(settings, instance_toml("alpha")) as h:
        running = await h.ready("alpha")
        write_atomic(h.state_file, instance_toml("alpha", state="stopped"))
        stopped = await h.phase_is("alpha", "Stopped")
        assert stopped.pid is None
        assert stopped.last_exit is not None
        assert not children(h.controller.actuator.owner, "alpha")
        # Many resyncs and probe periods later (tei-manager restarted it after 3 checks):
        await passes(h.controller, 15)
        assert h.phase("alpha") == "Stopped"
        assert not children(h.controller.actuator.owner, "alpha")
        assert running.pid is not None
        assert not psutil.pid_exists(running.pid)


async def test_a_removed_instance_is_gone_with_its_whole_process_group(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    async with reconciler(settings, instance_toml("alpha") + instance_toml("beta")) as h:
        alpha = await h.ready("alpha")
        await h.ready("beta")
        assert alpha.pid is not None
        pgid = os.getpgid(alpha.pid)
        assert pgid == alpha.pid  # its own process group
        write_atomic(h.state_file, instance_toml("beta"))
        await eventually(lambda: h.status("alpha") is None, what="alpha forgotten")
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
        assert h.table.get("alpha") is None
        beta = h.status("beta")
        assert beta is not None
        assert beta.ready


async def test_a_killed_instance_is_restarted_after_its_backoff(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, health_interval_secs=30.0)
    async with reconciler(settings, instance_toml("alpha")) as h:
        first = await h.ready("alpha")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        # Seen at once from the process exit, not after failed health checks (30 s apart).
        crashed = await eventually(
            lambda: (s := h.status("alpha")) is not None and s.last_exit is not None and s,
            within=10,
            what="the exit to be recorded",
        )
        assert crashed.last_exit is not None
        assert crashed.last_exit.signal == signal.SIGKILL
        again = await eventually(
            lambda: (s := h.status("alpha")) is not None and s.ready and s.pid != first.pid and s,
            what="a restarted Ready process",
        )
        assert again.restarts == 1
        events = [e.reason for e in h.store.events("alpha")]
        assert "BackOff" in events


def test_owner_marker_is_a_digest_of_the_absolute_state_path(tmp_path: Path) -> None:
    a = Controller.owner_of(fast_settings(tmp_path))
    b = Controller.owner_of(fast_settings(tmp_path / "other"))
    assert a != b
    assert len(a) == 16


async def test_the_http_build_is_started_with_http_and_probed_on_get_health(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path, tei_protocol="http")
    async with reconciler(settings, instance_toml("alpha")) as h:
        status = await h.ready("alpha")
        assert status.pid is not None
        assert "--http" in psutil.Process(status.pid).cmdline()
        assert status.probes[-1].message == "GET /health 200"


async def test_a_deleted_stopped_instance_disappears_from_the_api(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    async with (
        reconciler(settings, "[instances]\n", with_front_ends=True) as h,
        h.api() as api,
    ):
        body = {"name": "idle", "model_id": "hash/8", "gpu": "none", "state": "stopped"}
        assert (await api.post("/instances", json=body)).status_code == 201
        await h.phase_is("idle", "Stopped")
        assert (await api.delete("/instances/idle")).status_code == 204

        async def listed() -> list[str]:
            return [i["name"] for i in (await api.get("/instances")).json()]

        await passes(h.controller, 2)
        assert await listed() == []
        assert h.status("idle") is None
        assert (await api.get("/instances/idle")).status_code == 404
        assert (await api.delete("/instances/idle")).status_code == 404
