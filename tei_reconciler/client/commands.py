"""What each client command asks the REST API, and what it prints.

Handlers take the open `Client`, the parsed arguments and the output stream, and return the
exit status; errors are raised (`ServerError`, `Unreachable`, `CommandError`) and turned into
messages and statuses by `tei_reconciler.client.cli.run`, in one place.
"""

from __future__ import annotations

import argparse
import difflib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import anyio

from tei_reconciler.client import render
from tei_reconciler.client.http import Client, ServerError
from tei_reconciler.desired.fields import same_spec

TOML = {"Content-Type": "application/toml"}


class CommandError(Exception):
    """A failure on the client's side (unreadable file, timeout): message and exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def instance_path(name: str) -> str:
    return f"/instances/{quote(name, safe='')}"


def _json(out: TextIO, body: object) -> None:
    out.write(json.dumps(body, indent=2) + "\n")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", 2) from exc


def _revision(etag: str | None) -> str:
    return (etag or "").removeprefix("W/").strip('"')


async def get(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.name is not None:
        body = (await api.request("GET", instance_path(args.name))).json()
        items = [body]
    else:
        body = items = (await api.request("GET", "/instances")).json()
    if args.output == "json":
        _json(out, body)
    else:
        out.write(render.instances_table(items))
    return 0


async def describe(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    item = (await api.request("GET", instance_path(args.name))).json()
    events = (await api.request("GET", instance_path(args.name) + "/events")).json()
    if args.output == "json":
        _json(out, {"instance": item, "events": events})
    else:
        out.write(render.describe(item, events))
    return 0


async def logs(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, str | int | float] = {}
    if args.tail is not None:
        if args.tail < 0:
            raise CommandError("--tail must be 0 or more", 2)
        params["start"] = -args.tail if args.tail else 0
        if args.tail == 0:
            params["end"] = 0  # no lines, but still a 404 for an unknown instance
    if not args.follow:
        body = (await api.request("GET", instance_path(args.name) + "/logs", params=params)).json()
        if args.output == "json":
            _json(out, body)
        else:
            out.writelines(line + "\n" for line in body["lines"])
        return 0
    if args.tail == 0:
        count = await api.request("GET", instance_path(args.name) + "/logs", params=params)
        params = {"start": count.json()["total_lines"]}
    params["follow"] = "true"
    async for event, data in api.events(instance_path(args.name) + "/logs", params=params):
        if event != "log":
            continue
        if args.output == "json":
            out.write(json.dumps(data) + "\n")
        else:
            out.write(f"{data['line']}\n")
        out.flush()
    return 0


async def diff(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    new = _read(args.file)
    current = await api.request("GET", "/state")
    revision = _revision(current.headers.get("etag"))
    plan = (
        await api.request("PUT", "/state", params={"dry_run": "true"}, content=new, headers=TOML)
    ).json()
    if new == current.body:
        return 0
    lines = difflib.unified_diff(
        current.body.decode("utf-8", "replace").splitlines(keepends=True),
        new.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=f"server /state (revision {revision[:12]})",
        tofile=args.file,
    )
    for line in lines:
        out.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    out.write(render.plan_lines(plan.get("actions") or []))
    return 1


async def apply(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    new = _read(args.filename)
    expected = args.revision
    if expected is None:
        current = await api.request("GET", "/state")
        expected = _revision(current.headers.get("etag"))
        if current.body == new:
            if args.output == "json":
                _json(out, {"revision": expected, "dry_run": False, "written": False})
            else:
                out.write(f"state unchanged (revision {expected[:12]})\n")
            return 0
    headers = {**TOML, "If-Match": f'"{expected}"'}
    try:
        body = (await api.request("PUT", "/state", content=new, headers=headers)).json()
    except ServerError as exc:
        if exc.code == "REVISION_MISMATCH":
            exc.message += (
                f"; nothing was written: the state changed on the server after revision "
                f"{expected[:12]} was read. Review the change with "
                f"`tei-reconciler diff {args.filename}`, then apply again"
            )
        raise
    if args.output == "json":
        _json(out, body)
        return 0
    out.write(f"state applied (revision {body['revision'][:12]})\n")
    out.write(render.plan_lines(body.get("actions") or []))
    return 0


async def _lifecycle(api: Client, args: argparse.Namespace, out: TextIO, verb: str) -> int:
    item = (await api.request("POST", f"{instance_path(args.name)}/{verb}")).json()
    if args.output == "json":
        _json(out, item)
    else:
        done = {"start": "started", "stop": "stopped", "restart": "restarted"}[verb]
        out.write(
            f"instance/{item['name']} {done} (desired {item['desired_state']}, "
            f"phase {item['phase']})\n"
        )
    return 0


async def start(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    return await _lifecycle(api, args, out, "start")


async def stop(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    return await _lifecycle(api, args, out, "stop")


async def restart(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    return await _lifecycle(api, args, out, "restart")


async def delete(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    await api.request("DELETE", instance_path(args.name))
    if args.output == "json":
        _json(out, {"name": args.name, "deleted": True})
    else:
        out.write(f"instance/{args.name} deleted\n")
    return 0


def _met(
    condition: str, item: Mapping[str, Any], desired: Mapping[str, Any], revision: str | None
) -> bool:
    if condition == "ready":
        # Ready with this spec, run by its process: during a surge rollout the old process
        # is Ready (and shown with the new desired spec) until the new one takes over.
        running = (item.get("rollout") or {}).get("current_spec_hash")
        return (
            bool(item.get("ready"))
            and same_spec(item.get("spec") or {}, desired)
            and (revision is None or running == revision)
        )
    if condition == "stopped":
        return item.get("phase") == "Stopped"
    return False


def _phase(item: Mapping[str, Any]) -> str:
    text = str(item.get("phase"))
    detail = ": ".join(p for p in (item.get("reason"), item.get("message")) if p)
    return f"{text} ({detail})" if detail else text


async def wait(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Print every phase change until the condition holds, or fail after `--timeout`."""
    name, condition = args.name, args.condition
    began = time.monotonic()
    last = "unknown"

    def progress(text: str) -> None:
        out.write(f"instance/{name}: {text} [{render.duration(time.monotonic() - began)}]\n")
        out.flush()

    with anyio.move_on_after(args.timeout):
        try:
            first = (await api.request("GET", instance_path(name))).json()
        except ServerError as exc:
            if condition == "deleted" and exc.code == "INSTANCE_NOT_FOUND":
                out.write(f"instance/{name} condition met (deleted)\n")
                return 0
            raise
        desired = first.get("spec") or {}
        revision = (first.get("rollout") or {}).get("spec_hash")
        last = _phase(first)
        progress(last)
        try:
            async for event, data in api.events(instance_path(name) + "/events"):
                if event == "deleted":
                    if condition == "deleted":
                        out.write(f"instance/{name} condition met (deleted)\n")
                        return 0
                    raise CommandError(f"instance/{name} was deleted while waiting for {condition}")
                if event != "status":
                    continue
                shown = _phase(data)
                if shown != last:
                    last = shown
                    progress(shown)
                if _met(condition, data, desired, revision):
                    out.write(f"instance/{name} condition met ({condition})\n")
                    return 0
        except ServerError as exc:  # gone between the first read and the watch
            if condition == "deleted" and exc.code == "INSTANCE_NOT_FOUND":
                out.write(f"instance/{name} condition met (deleted)\n")
                return 0
            raise
        raise CommandError(
            f"the server closed the stream before instance/{name} was {condition}", 2
        )
    raise CommandError(
        f"timed out after {args.timeout:g}s waiting for instance/{name} to be {condition} "
        f"(last seen: {last})"
    )
