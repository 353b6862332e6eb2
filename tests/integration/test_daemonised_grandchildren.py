"""A TEI that leaves a daemon behind (fork, setsid, fork: a process in its own session, out of
the instance's process group) still leaves nothing alive once its instance is stopped or
deleted: every process carrying the instance process's markers is stopped, and the reconciler,
a child subreaper, reaps the orphans re-parented to it."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from .reconciler_harness import (
    fast_settings,
    instance_toml,
    reconciler,
    script,
    write_atomic,
)
from support.processes import children
from support.reconciler import Reconciler
from support.waiting import eventually, wait_until

pytestmark = pytest.mark.anyio

#: Starts the built-in engine after leaving a daemon behind (forked by a child that exits at
#: once, so an orphan, in a session of its own): its pid goes to $DAEMON_PID_FILE.
DAEMONISING_TEI = """
import os
import subprocess
import sys
import time

middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        os.setsid()  # a session (and process group) of its own
        with open(os.environ["DAEMON_PID_FILE"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.environ["DAEMON_PID_FILE"] + ".tmp", os.environ["DAEMON_PID_FILE"])
        while True:
            time.sleep(3600)
    os._exit(0)
os.waitpid(middle, 0)
engine = [sys.executable, "-m", "tei_reconciler", "engine", *sys.argv[1:]]
sys.exit(subprocess.call(engine))  # this wrapper stays the leader, as a launcher script does
"""


def daemon_of(pid_file: Path) -> psutil.Process:
    pid = wait_until(lambda: pid_file.exists() and pid_file.read_text(), "the daemon's pid")
    return psutil.Process(int(pid))


async def test_a_daemon_in_its_own_session_is_stopped_with_its_instance(tmp_path: Path) -> None:
    binary = script(tmp_path, "daemonising-tei", DAEMONISING_TEI)
    pid_file = tmp_path / "daemon.pid"
    settings = fast_settings(tmp_path, tei_binary=str(binary))
    spec = instance_toml("alpha", env={"DAEMON_PID_FILE": str(pid_file)})
    async with reconciler(settings, spec) as h:
        leader = (await h.ready("alpha")).pid
        assert leader is not None
        daemon = daemon_of(pid_file)
        assert os.getsid(daemon.pid) != os.getsid(leader)  # out of the instance's session
        write_atomic(
            h.state_file, spec.replace("[instances.alpha]", '[instances.alpha]\nstate = "stopped"')
        )
        await h.phase_is("alpha", "Stopped")
        owner = h.controller.actuator.owner
        await eventually(lambda: not children(owner, "alpha"), what="no process of alpha left")
        assert not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE


def test_the_reconciler_adopts_orphaned_daemons_and_reaps_them_when_it_deletes_the_instance(
    tmp_path: Path,
) -> None:
    binary = script(tmp_path, "daemonising-tei", DAEMONISING_TEI)
    pid_file = tmp_path / "daemon.pid"
    server = Reconciler(tmp_path, settings={"TEI_BINARY": str(binary)})
    server.start()
    try:
        server.create("alpha", env={"DAEMON_PID_FILE": str(pid_file)})
        server.wait_ready("alpha")
        daemon = daemon_of(pid_file)
        assert server.process is not None
        assert daemon.ppid() == server.process.pid  # a child subreaper: orphans come to it
        with server.api() as client:
            assert client.delete("/instances/alpha").status_code == 204
        wait_until(lambda: not children(server.owner), "no process of the reconciler's left")
        reconciler_proc = psutil.Process(server.process.pid)
        wait_until(
            lambda: not [c for c in reconciler_proc.children() if c.pid == daemon.pid],
            "the daemon reaped, not left a zombie",
        )
        server.check_running()
    finally:
        server.stop()
        for leftover in children(server.owner):
            leftover.kill()


async def test_a_restarted_reconciler_adopts_the_instance_process_not_the_daemon_it_left(
    tmp_path: Path,
) -> None:
    binary = script(tmp_path, "daemonising-tei", DAEMONISING_TEI)
    pid_file = tmp_path / "daemon.pid"
    spec = instance_toml("alpha", env={"DAEMON_PID_FILE": str(pid_file)})
    keep = fast_settings(tmp_path, tei_binary=str(binary), on_shutdown="keep")
    async with reconciler(keep, spec) as h:
        leader = (await h.ready("alpha")).pid
        daemon = daemon_of(pid_file)
    assert os.getpgid(daemon.pid) == daemon.pid  # a group leader too, with the same markers
    async with reconciler(fast_settings(tmp_path, tei_binary=str(binary))) as h:
        adopted = await h.ready("alpha")
        assert adopted.pid == leader
        assert adopted.restarts == 0
        assert daemon.is_running()  # part of the adopted family, not a duplicate to stop
        write_atomic(h.state_file, "[instances]\n")
        await eventually(lambda: h.status("alpha") is None, what="alpha removed")
        owner = h.controller.actuator.owner
        await eventually(lambda: not children(owner, "alpha"), what="no process of alpha left")
