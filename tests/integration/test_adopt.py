"""A reconciler crash costs no instance downtime: the next one adopts what is running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tei_reconciler.control.controller import Controller
from tei_reconciler.settings import Settings

from .reconciler_harness import (
    fast_settings,
    instance_toml,
    reconciler,
    script,
    write_atomic,
)
from support.processes import children
from support.reconciler import Reconciler
from support.waiting import eventually

pytestmark = pytest.mark.anyio


def config_toml(settings: Settings) -> str:
    keys = [
        "state_file",
        "runtime_dir",
        "tei_binary",
        "instance_port_range",
        "prometheus_port_range",
        "resync_interval_secs",
        "health_interval_secs",
        "health_timeout_secs",
        "failure_threshold",
        "backoff_initial_secs",
        "backoff_max_secs",
        "stop_grace_secs",
        "on_shutdown",
    ]
    lines = []
    for key in keys:
        value = getattr(settings, key)
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, tuple):
            lines.append(f"{key} = [{value[0]}, {value[1]}]")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tei.v1.Embed"), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def port_of(proc: psutil.Process) -> int:
    argv = proc.cmdline()
    return int(argv[argv.index("--port") + 1])


def serving_children(owner: str, count: int) -> list[psutil.Process] | None:
    """The owner's `count` instance processes once each serves (None before, also while a
    process seen a moment ago is gone)."""
    try:
        procs = children(owner)
        return procs if len(procs) == count and all(serving(port_of(p)) for p in procs) else None
    except psutil.Error:
        return None


@pytest.fixture
def stray_children(tmp_path: Path) -> Iterator[None]:
    """Whatever a test leaves running under its owner marker is killed afterwards."""
    yield
    owner = Controller.owner_of(fast_settings(tmp_path))
    for proc in children(owner, data_plane=True):  # a killed reconciler's Envoy, too
        proc.kill()


async def test_instances_survive_a_reconciler_kill_and_are_adopted_without_restarts(
    tmp_path: Path, stray_children: None
) -> None:
    settings = fast_settings(tmp_path, api_port=0, grpc_port=0)
    config = tmp_path / "config.toml"
    config.write_text(config_toml(settings))
    state_file = Path(settings.state_file)
    write_atomic(state_file, instance_toml("alpha") + instance_toml("beta"))
    owner = Controller.owner_of(settings)
    env = {**os.environ, "TEI_RECONCILER_API_PORT": "0", "TEI_RECONCILER_GRPC_PORT": "0"}
    with (tmp_path / "first.log").open("wb") as log:
        first = await anyio.open_process(
            [sys.executable, "-m", "tei_reconciler", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        running = await eventually(
            lambda: (
                len(procs := children(owner)) == 2
                and all(serving(port_of(p)) for p in procs)
                and procs
            ),
            what="two serving instances under the first reconciler",
        )
    finally:
        first.kill()  # SIGKILL: no shutdown code runs
        await first.wait()
    pids = {psutil.Process(p.pid).environ()["TEI_RECONCILER_INSTANCE"]: p.pid for p in running}
    ports = {p.pid: port_of(p) for p in running}
    # The reconciler is gone; its instances still answer.
    assert all(serving(port) for port in ports.values())
    # While no reconciler runs, beta's spec changes.
    write_atomic(state_file, instance_toml("alpha") + instance_toml("beta", max_batch_tokens=512))
    async with reconciler(settings) as h:
        alpha = await h.ready("alpha")
        assert alpha.pid == pids["alpha"]
        assert alpha.restarts == 0
        assert alpha.port == ports[pids["alpha"]]
        assert any(e.reason == "Adopted" for e in h.store.events("alpha"))
        beta = await eventually(
            lambda: (s := h.status("beta")) is not None and s.ready and s.pid != pids["beta"] and s,
            what="beta replaced",
        )
        assert beta.pid is not None
        argv = psutil.Process(beta.pid).cmdline()
        assert argv[argv.index("--max-batch-tokens") + 1] == "512"
        assert len(children(owner)) == 2  # never a duplicate
        still = h.status("alpha")
        assert still is not None
        assert still.pid == pids["alpha"]


async def test_a_rollout_interrupted_by_a_reconciler_kill_completes_after_the_restart(
    tmp_path: Path,
) -> None:
    first = Reconciler(tmp_path / "first", config='data_plane = "grpcio"\n')
    owner = Controller.owner_of(fast_settings(tmp_path, state_file=str(first.state_file)))
    first.start()
    try:
        first.create("alpha")
        old = await eventually(
            lambda: (i := first.instance("alpha")) is not None and i["ready"] and i,
            what="alpha Ready",
        )
        # The new spec's process takes a while to answer: the rollout is under way when the
        # reconciler dies.
        with first.api() as api:
            slow = {
                "model_id": "hash/384",
                "gpu": "none",
                "env": {"TEI_ENGINE_FAULTS": "ready_delay=3"},
            }
            assert api.put("/instances/alpha", json=slow).status_code == 200
        rolling = await eventually(
            lambda: (i := first.instance("alpha")) is not None and len(i["processes"]) == 2 and i,
            what="the new process beside the old one",
        )
    finally:
        assert first.process is not None
        first.process.kill()  # SIGKILL: no shutdown code runs
        first.process.wait()
    new = next(p["pid"] for p in rolling["processes"] if p["role"] == "next")
    assert serving(old["port"])  # the old process still serves meanwhile
    settings = fast_settings(
        tmp_path,
        state_file=str(first.state_file),
        runtime_dir=str(first.root / "runtime"),
        data_plane="grpcio",
    )
    try:
        async with reconciler(settings) as h:
            done = await eventually(
                lambda: (
                    (s := h.status("alpha")) is not None
                    and s.ready
                    and s.pid == new
                    and [p.role for p in s.processes] == ["current"]
                    and s
                ),
                what="the rollout to finish with the adopted new process",
            )
            # None orphaned, none duplicated: the old one stopped, nothing else started.
            assert [p.pid for p in children(owner)] == [new]
            adopted = [e.message for e in h.store.events("alpha") if e.reason == "Adopted"]
            assert (
                f"adopted running process {new} (the new process of an unfinished rollout)"
                in adopted
            )
            assert done.port == next(p["port"] for p in rolling["processes"] if p["pid"] == new)
    finally:
        for proc in children(owner, data_plane=True):
            proc.kill()


async def test_keep_on_shutdown_leaves_instances_running_for_the_next_reconciler(
    tmp_path: Path, stray_children: None
) -> None:
    settings = fast_settings(tmp_path, on_shutdown="keep")
    async with reconciler(settings, instance_toml("alpha")) as h:
        status = await h.ready("alpha")
    assert status.pid is not None
    assert psutil.pid_exists(status.pid)
    assert status.port is not None
    assert serving(status.port)
    async with reconciler(fast_settings(tmp_path)) as h:
        again = await h.ready("alpha")
        assert again.pid == status.pid
        assert again.restarts == 0


async def test_stop_on_shutdown_signals_every_instance_at_once_not_one_after_another(
    tmp_path: Path,
) -> None:
    """tei-manager stopped instances one after another, 30 s each. Each instance here ignores
    SIGTERM and records it: when the last one has it, none may have been killed yet, which a
    stop that waits out one grace period per instance cannot do."""
    settings = fast_settings(tmp_path, stop_grace_secs=5.0)
    names = ("a", "b", "c")
    received = {n: tmp_path / f"{n}.signals" for n in names}
    state = "".join(
        instance_toml(n, env={"TEI_ENGINE_FAULTS": f"ignore_sigterm=1,signal_file={received[n]}"})
        for n in names
    )
    alive_when_all_signalled: list[bool] = []

    async def watch_the_shutdown(pids: list[int]) -> None:
        await eventually(
            lambda: all(f.exists() for f in received.values()), what="SIGTERM at every instance"
        )
        alive_when_all_signalled.extend(psutil.pid_exists(p) for p in pids)

    async with anyio.create_task_group() as tg, reconciler(settings, state) as h:
        pids = [(await h.ready(n)).pid or 0 for n in names]
        tg.start_soon(watch_the_shutdown, pids)
    assert alive_when_all_signalled == [True, True, True]
    assert all(f.read_text() == "SIGTERM\n" for f in received.values())
    assert not any(psutil.pid_exists(p) for p in pids)  # then the grace ran out: SIGKILL


async def test_sigterm_to_the_reconciler_stops_its_instances_and_exits_cleanly(
    tmp_path: Path, stray_children: None
) -> None:
    settings = fast_settings(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(config_toml(settings))
    write_atomic(Path(settings.state_file), instance_toml("alpha"))
    owner = Controller.owner_of(settings)
    env = {**os.environ, "TEI_RECONCILER_API_PORT": "0", "TEI_RECONCILER_GRPC_PORT": "0"}
    process = await anyio.open_process(
        [sys.executable, "-m", "tei_reconciler", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        (instance,) = await eventually(
            lambda: len(procs := children(owner)) == 1 and serving(port_of(procs[0])) and procs,
            what="one serving instance",
        )
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert not psutil.pid_exists(instance.pid)
    assert children(owner, data_plane=True) == []  # its Envoy, if it ran one, is gone too


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


async def test_a_live_process_whose_instance_was_removed_while_no_reconciler_ran_is_stopped(
    tmp_path: Path, stray_children: None
) -> None:
    keep = fast_settings(tmp_path, on_shutdown="keep")
    async with reconciler(keep, instance_toml("alpha") + instance_toml("beta")) as h:
        alpha = await h.ready("alpha")
        beta = await h.ready("beta")
    assert alpha.pid is not None
    assert psutil.pid_exists(alpha.pid)  # left running
    book = Path(keep.runtime_dir) / "ports.json"
    assert '"alpha"' in book.read_text()
    write_atomic(Path(keep.state_file), instance_toml("beta"))  # removed meanwhile
    async with reconciler(fast_settings(tmp_path)) as h:
        await eventually(lambda: not psutil.pid_exists(alpha.pid or 0), what="alpha stopped")
        await eventually(lambda: h.status("alpha") is None, what="alpha forgotten")
        assert h.table.get("alpha") is None
        assert h.controller.ports.get("alpha") is None
        assert '"alpha"' not in book.read_text()  # its ports are free for others
        again = await h.ready("beta")
        assert again.pid == beta.pid  # the other instance was adopted, not restarted
        assert children(h.controller.actuator.owner, "alpha") == []
        events = [e.reason for e in h.store.events()]
        assert "Adopted" in events
