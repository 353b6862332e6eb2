"""What must hold once a reconciler has settled, however it got there: the status and the
processes tell the same story.

- no orphan: every process carrying the reconciler's markers belongs to an instance the status
  lists, with that very pid;
- no duplicate: at most one process per instance;
- status matches processes: an instance shown with a pid has that process alive; one shown
  Running has a pid;
- every Ready instance answers through the router.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.processes import by_instance
from support.reconciler import Reconciler
from support.waiting import wait_until


def disagreements(statuses: list[dict[str, Any]], processes: dict[str, list[int]]) -> list[str]:
    """Every way `statuses` (GET /instances) and `processes` (pids per instance marker) differ."""
    found: list[str] = []
    shown = {s["name"]: s for s in statuses}
    for name, pids in processes.items():
        status = shown.get(name)
        if status is None:
            found.append(f"orphan: {name} pids {pids} not in the status")
        elif len(pids) > 1:
            found.append(f"duplicate: {name} has pids {pids}")
        elif status.get("pid") != pids[0]:
            found.append(f"{name}: status pid {status.get('pid')} but process {pids[0]}")
    for name, status in shown.items():
        pid = status.get("pid")
        if pid is not None and pid not in processes.get(name, []):
            found.append(f"{name}: status shows pid {pid} ({status['phase']}), which is gone")
        if status["phase"] == "Running" and pid is None:
            found.append(f"{name}: running without a pid")
    return found


def settled(statuses: list[dict[str, Any]]) -> list[str]:
    """Instances still on their way somewhere (a check waits these out)."""
    return [s["name"] for s in statuses if s["phase"] in ("Pending", "Starting", "Stopping")]


def answers(target: str, name: str) -> str | None:
    """None when `name` answers an Embed through the router, else why not."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs="are you there"),
                metadata=[("x-tei-instance", name)],
                timeout=30,
            )
        except grpc.RpcError as exc:
            return f"{name}: {exc.code().name} {exc.details()}"
    return None if reply.embeddings else f"{name}: an empty answer"


def converged(server: Reconciler, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Wait until the reconciler has settled with every invariant holding (and, given `names`,
    exactly those instances listed); then every Ready instance must answer through the router.
    Returns the statuses it checked."""
    wanted = None if names is None else set(names)
    last: list[str] = []

    def check() -> list[dict[str, Any]] | None:
        server.check_running()
        statuses = server.instances()
        problems = disagreements(statuses, by_instance(server.owner))
        problems += [f"{n}: not settled" for n in settled(statuses)]
        listed = {s["name"] for s in statuses}
        if wanted is not None and listed != wanted:
            problems.append(f"listed {sorted(listed)}, wanted {sorted(wanted)}")
        last[:] = problems
        return None if problems else statuses

    statuses: list[dict[str, Any]] = wait_until(
        check, "status and processes to agree", detail=lambda: "\n".join(last)
    )
    target = f"127.0.0.1:{server.grpc_port}"
    silent = [why for s in statuses if s["ready"] and (why := answers(target, s["name"]))]
    assert not silent, silent
    return statuses
