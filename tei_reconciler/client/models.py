"""`tei-reconciler models ls | pull | rm`: the model registry through the REST API.

`pull` asks the server to fetch a model now and follows its progress on the model's event
stream: a progress bar on a terminal, one line per tenth (and per state change) otherwise;
it ends when the model is on disk (exit 0) or the fetch failed (exit 1, the reason printed).
`rm` removes a model's `[models]` table from the state file, and with `--evict` its files from
the cache (refused while an instance uses it).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

import anyio

from tei_reconciler.client import render
from tei_reconciler.client.http import Client

BAR_WIDTH = 30


class PullFailed(Exception):
    """The server could not fetch the model: its reason and message."""


def _path(model_id: str) -> str:
    return "/models/" + quote(model_id, safe="")


def setup(parser: argparse.ArgumentParser) -> None:
    from tei_reconciler.client.cli import common_options  # noqa: PLC0415 - cli imports us

    common = [common_options(defaults=False)]
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("ls", help="list declared, used and cached models", parents=common)
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    pull = verbs.add_parser(
        "pull", help="fetch a model into the cache now, with progress", parents=common
    )
    pull.add_argument(
        "model_id", metavar="MODEL", help="a Hugging Face id, e.g. BAAI/bge-small-en-v1.5"
    )
    pull.add_argument(
        "--revision",
        metavar="REV",
        help="branch, tag or commit (default: the declared one, else main)",
    )
    pull.add_argument("--no-wait", action="store_true", help="return once the fetch is queued")
    pull.add_argument(
        "--timeout", type=float, default=3600.0, metavar="SECS", help="give up after SECS"
    )
    pull.add_argument("-o", "--output", choices=("table", "json"), default="table")
    rm = verbs.add_parser(
        "rm", help="undeclare a model (--evict: also delete its files)", parents=common
    )
    rm.add_argument("model_id", metavar="MODEL")
    rm.add_argument("--evict", action="store_true", help="remove it from the cache too")
    rm.add_argument("-o", "--output", choices=("table", "json"), default="table")


async def run(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.verb == "ls":
        return await _ls(api, args, out)
    if args.verb == "pull":
        return await _pull(api, args, out)
    return await _rm(api, args, out)


async def _ls(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    items = (await api.request("GET", "/models")).json()
    if args.output == "json":
        out.write(json.dumps(items, indent=2) + "\n")
    else:
        out.write(render.models_table(items))
    return 0


async def _rm(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    params = {"evict": "true"} if args.evict else {}
    await api.request("DELETE", _path(args.model_id), params=params)
    if args.output == "json":
        out.write(json.dumps({"model_id": args.model_id, "evicted": args.evict}) + "\n")
    else:
        done = "undeclared and removed from the cache" if args.evict else "undeclared"
        out.write(f"model/{args.model_id} {done}\n")
    return 0


async def _pull(api: Client, args: argparse.Namespace, out: TextIO) -> int:
    params = {"revision": args.revision} if args.revision else {}
    first = (await api.request("POST", _path(args.model_id) + "/download", params=params)).json()
    if args.no_wait:
        _final(out, args, first)
        return 0
    shown = _Shown(out, terminal=out.isatty())
    with anyio.move_on_after(args.timeout):
        async for event, data in api.events(_path(args.model_id) + "/events"):
            if event != "model":
                continue
            shown.update(data)
            if data.get("status") == "downloaded" and data.get("reason") != "Queued":
                shown.end()
                _final(out, args, data)
                return 0
            if data.get("status") == "failed":
                shown.end()
                raise PullFailed(f"{data.get('reason')}: {data.get('message')}")
        raise PullFailed("the server closed the stream before the model was downloaded")
    shown.end()
    raise PullFailed(f"timed out after {args.timeout:g}s (last seen: {shown.last})")


def _final(out: TextIO, args: argparse.Namespace, item: Mapping[str, Any]) -> None:
    if args.output == "json":
        out.write(json.dumps(item, indent=2) + "\n")
        return
    size = item.get("cache_size_bytes")
    where = f" in {item['cache_path']}" if item.get("cache_path") else ""
    sized = f" ({render.size(size)})" if isinstance(size, int) else ""
    out.write(f"model/{item['model_id']} {item.get('status')}{sized}{where}\n")


class _Shown:
    """The pull's progress as a person sees it: a redrawn bar on a terminal, lines otherwise."""

    def __init__(self, out: TextIO, *, terminal: bool) -> None:
        self.out, self.terminal = out, terminal
        self.last = "queued"
        self._tenth = -1
        self._drawn = False
        self._began = time.monotonic()

    def update(self, item: Mapping[str, Any]) -> None:
        progress = item.get("progress")
        text = f"{item.get('status')}: {item.get('message') or item.get('reason') or ''}".rstrip(
            ": "
        )
        if self.terminal and progress:
            bar = render.progress_bar(progress, BAR_WIDTH)
            elapsed = render.duration(time.monotonic() - self._began)
            self.out.write(f"\r{bar} {elapsed}\x1b[K")
            self._drawn = True
        elif progress:
            tenth = int(progress.get("percent", 0) // 10)
            if tenth != self._tenth:
                self._tenth = tenth
                self.out.write(f"{item['model_id']}: {text}\n")
        elif text != self.last:
            self.end()
            self.out.write(f"{item['model_id']}: {text}\n")
        self.last = text
        self.out.flush()

    def end(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self._drawn = False
