"""`tei-reconciler rollout status` follows a rollout step by step, against a real API whose
status store is filled by hand, and ends as `kubectl rollout status` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.desired.spec import spec_hash
from tei_reconciler.planner.observed import RolloutFailure
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.status import Condition, ProcessStatus

from .harness import Server, cli, instances, running, served

pytestmark = pytest.mark.anyio


def process(role: str, pid: int, hash_: str, state: str = "Ready") -> ProcessStatus:
    return ProcessStatus(
        role=role,
        pid=pid,
        port=8100 + pid % 100,
        prometheus_port=None,
        spec_hash=hash_,
        state=state,
        created_at=1_700_000_000.0,
    )


def progressing(message: str, *, status: str = "True", reason: str = "RollingUpdate") -> Condition:
    return Condition(
        type="Progressing",
        status=status,
        reason=reason,
        message=message,
        last_transition_time=1_700_000_000.0,
    )


def edit(server: Server) -> tuple[str, str]:
    """The old spec's revision, and the new one's once alpha's spec is edited."""
    old = spec_hash(server.spec("alpha"))
    server.statefile.set_field("alpha", "max_batch_tokens", 512)
    return old, spec_hash(server.spec("alpha"))


STARTING = "new process pid 7 is starting; pid 4242 keeps serving"
SWITCHED = "traffic switched to pid 7; the old process is draining"


def starting(server: Server, old: str, new: str) -> None:
    """Alpha's edited spec: the new process (pid 7) starts beside the old one (4242)."""
    server.observe(
        "alpha",
        Phase.RUNNING,
        spec_hash=old,
        processes=(process("current", 4242, old), process("next", 7, new, "Starting")),
        conditions=(progressing(STARTING),),
    )


async def test_rollout_status_prints_each_step_and_succeeds_once_the_new_process_serves(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.RUNNING)
        old, new = edit(server)
        async with running("rollout", "status", "alpha", "--server", server.url) as follower:
            await follower.read_until("Waiting for instance/alpha rollout to finish")
            starting(server, old, new)
            await follower.read_until(STARTING)
            server.observe(
                "alpha",
                Phase.RUNNING,
                pid=7,
                spec_hash=new,
                processes=(process("current", 7, new), process("old", 4242, old, "Draining")),
                conditions=(progressing(SWITCHED),),
            )
            await follower.read_until(SWITCHED)
            server.observe(
                "alpha",
                Phase.RUNNING,
                pid=7,
                spec_hash=new,
                processes=(process("current", 7, new),),
            )
            status = await follower.finish()
    assert status == 0, follower.errors
    assert follower.output.rstrip().endswith(f"successfully rolled out (pid 7, spec {new})")


async def test_rollout_status_fails_when_the_rollout_failed(tmp_path: Path) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.RUNNING)
        old, new = edit(server)
        message = "new process pid 7 exited with code 1; retry in 10s"
        server.observe(
            "alpha",
            Phase.RUNNING,
            spec_hash=old,
            processes=(process("current", 4242, old),),
            conditions=(progressing(message, status="False", reason="RolloutFailed"),),
            rollout_failure=RolloutFailure(reason="RolloutFailed", message=message, spec_hash=new),
        )
        done = await cli("rollout", "status", "alpha", "--server", server.url)
    assert done.returncode == 1
    assert f"instance/alpha rollout failed: RolloutFailed: {message}" in done.stderr


async def test_rollout_status_does_not_take_a_change_not_acted_on_yet_for_done(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.RUNNING)  # Ready, with the old spec
        edit(server)
        done = await cli("rollout", "status", "alpha", "--timeout", "0.5", "--server", server.url)
    assert done.returncode == 1
    assert "timed out after 0.5s waiting for instance/alpha to roll out" in done.stderr


async def test_rollout_status_of_an_instance_already_rolled_out_succeeds_at_once(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.RUNNING)
        done = await cli("rollout", "status", "alpha", "--server", server.url)
    assert done.returncode == 0, done.stderr
    assert "successfully rolled out (pid 4242" in done.stdout


async def test_wait_for_ready_waits_for_the_process_of_the_new_spec(tmp_path: Path) -> None:
    """During a surge the old process is Ready while the status already shows the new spec."""
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.RUNNING)
        old, _ = edit(server)
        server.observe("alpha", Phase.RUNNING, spec_hash=old)
        done = await cli("wait", "alpha", "--timeout", "0.5", "--server", server.url)
    assert done.returncode == 1


async def test_describe_shows_the_rollout_and_both_processes_while_it_rolls(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, instances(["alpha"])) as server:
        server.observe("alpha", Phase.RUNNING)
        old, new = edit(server)
        starting(server, old, new)
        done = await cli("describe", "alpha", "--server", server.url)
    assert done.returncode == 0, done.stderr
    rollout = next(line for line in done.stdout.splitlines() if line.startswith("Rollout:"))
    assert rollout.split(None, 1)[1] == f"surge, progressing (RollingUpdate: {STARTING})"
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert ["current", "4242", "8142", "Ready", old] == rows[
        rows.index(["ROLE", "PID", "PORT", "STATE", "SPEC", "AGE"]) + 1
    ][:5]
    assert any(r[:4] == ["next", "7", "8107", "Starting"] for r in rows)
