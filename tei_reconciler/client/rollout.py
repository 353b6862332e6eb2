"""`tei-reconciler rollout status | restart NAME`: follow a rollout, like `kubectl rollout`.

`status` reads the instance once (its desired spec's revision comes from the state file as it
is now, so an edit the controller has not acted on yet is not taken for done), then follows
its status stream and prints each step (the new process starting, Ready, the switch, the old
one draining). It ends with exit 0 once the instance's only process runs the desired spec
and is Ready, 1 when the rollout failed (the old process keeps serving) or `--timeout`
passed. When the spec changes again meanwhile, it follows the new rollout.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from typing import Any, TextIO

import anyio

from tei_reconciler.client import render
from tei_reconciler.client.commands import instance_path
from tei_reconciler.client.http import Client

Item = Mapping[str, Any]


class RolloutFailed(Exception):
    """The rollout failed, or did not finish in time: the message says which and why."""


def setup(parser: argparse.ArgumentParser) -> None:
    from tei_reconciler.client.cli import common_options  # noqa: PLC0415 - cli imports us

    common = [common_options(defaults=False)]
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser(
        "status", help="follow an instance's rollout until it is done or failed", parents=common
    )
    status.add_argument("name", metavar="NAME", help="instance name")
    status.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="SECS",
        help="give up (exit 1) after SECS seconds; 0 (the default) waits as long as it takes",
    )
    restart = verbs.add_parser(
        "restart", help="roll an instance to a new process with the same spec", parents=common
    )
    restart.add_argument("name", metavar="NAME", help="instance name")


async def run(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.verb == "restart":
        item = (await api.request("POST", f"{instance_path(args.name)}/restart")).json()
        out.write(f"instance/{item['name']} restarted (rolls by {item['rollout']['strategy']})\n")
        return 0
    return await _status(api, args.name, out, limit=args.timeout)


def verdict(item: Item, wanted: str) -> tuple[str, str]:
    """("complete" | "failed" | "progressing", the line to print) for `item` against the
    desired revision `wanted`."""
    rollout: Item = item.get("rollout") or {}
    processes = item.get("processes") or []
    name = item.get("name")
    updated = rollout.get("current_spec_hash") == wanted
    stopped = rollout.get("spec_hash") == wanted and rollout.get("state") == "complete"
    alone = all(p.get("role") == "current" for p in processes)
    if stopped or (updated and item.get("ready") and alone):
        pid = f"pid {item['pid']}, " if item.get("pid") else ""
        return "complete", f"instance/{name} successfully rolled out ({pid}spec {wanted})"
    reason, message = rollout.get("reason", ""), rollout.get("message", "")
    if rollout.get("spec_hash") == wanted and rollout.get("state") == "failed":
        return "failed", f"instance/{name} rollout failed: {reason}: {message}"
    return "progressing", f"Waiting for instance/{name} rollout to finish: {message or reason}"


async def _status(api: Client, name: str, out: TextIO, *, limit: float) -> int:
    began = time.monotonic()
    shown = ""

    def say(line: str) -> None:
        nonlocal shown
        if line != shown:
            shown = line
            out.write(f"{line} [{render.duration(time.monotonic() - began)}]\n")
            out.flush()

    with anyio.move_on_after(limit if limit > 0 else math.inf):
        first = (await api.request("GET", instance_path(name))).json()
        wanted = first["rollout"]["spec_hash"]
        state, line = verdict(first, wanted)
        if state == "progressing":
            say(line)
            async for event, data in api.events(instance_path(name) + "/events"):
                if event == "deleted":
                    raise RolloutFailed(f"instance/{name} was deleted during its rollout")
                if event != "status":
                    continue
                seen = data.get("rollout", {}).get("spec_hash")
                if seen != wanted:
                    # The controller acts on another spec than we read: look at the file.
                    latest = (await api.request("GET", instance_path(name))).json()
                    if latest["rollout"]["spec_hash"] != wanted:
                        wanted = latest["rollout"]["spec_hash"]
                        say(f"instance/{name}: the spec changed again; now rolling out {wanted}")
                state, line = verdict(data, wanted)
                if state != "progressing":
                    break
                say(line)
            else:
                raise RolloutFailed(
                    f"the server closed the stream before instance/{name} rolled out"
                )
        if state == "failed":
            raise RolloutFailed(line)
        out.write(line + "\n")
        return 0
    raise RolloutFailed(
        f"timed out after {limit:g}s waiting for instance/{name} to roll out (last seen: "
        f"{shown or 'nothing'})"
    )
