"""`tei-reconciler models ls | pull | rm` against a real API, a real model registry and a
local Hub: pull shows its progress and ends when the model is on disk, or fails with the
reason; a terminal gets a redrawn progress bar."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tei_reconciler._types import SystemClock
from tei_reconciler.client.http import Client, Connection
from tei_reconciler.client.models import _Shown
from tei_reconciler.client.render import progress_bar
from tei_reconciler.models.cache import HubCache
from tei_reconciler.models.hub import Fetcher
from tei_reconciler.models.registry import ModelRegistry
from tei_reconciler.models.select import Flavour
from tei_reconciler.planner.backoff import BackoffPolicy
from tei_reconciler.store import StatusStore

from .harness import Server, cli, served
from support.hub import Hub, serving
from support.model_files import MINILM_CONFIG, as_json, safetensors, write_cached
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio
FILES = {
    "config.json": as_json(MINILM_CONFIG),
    "tokenizer.json": b"{}",
    "model.safetensors": safetensors({"w": ("F32", (256, 256))}),
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, Hub]]:
    with serving() as hub:
        hub.add("acme/small", FILES)
        cache = tmp_path / "hub"
        write_cached(cache, "other/cached", FILES, "e" * 40)
        store = StatusStore()
        registry = ModelRegistry(
            fetcher=Fetcher(HubCache(cache)),
            store=store,
            clock=SystemClock(),
            endpoint=hub.url,
            flavour=Flavour.SAFETENSORS,
            backoff=BackoffPolicy(initial=600, maximum=600),
        )
        state = '[instances.emb]\nmodel_id = "other/cached"\n'
        async with (
            anyio.create_task_group() as tg,
            served(tmp_path, state, models=registry, store=store) as api,
        ):
            await tg.start(registry.run)
            yield api, hub
            tg.cancel_scope.cancel()


async def test_pull_prints_its_progress_and_where_the_model_landed(
    server: tuple[Server, Hub],
) -> None:
    api, _ = server
    done = await cli("models", "pull", "acme/small", "--server", api.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("of 3 files" in line for line in lines[:-1])
    assert lines[-1].startswith("model/acme/small downloaded (")
    assert "models--acme--small/snapshots/" in lines[-1]


async def test_pull_of_a_missing_model_fails_with_the_reason(server: tuple[Server, Hub]) -> None:
    api, hub = server
    done = await cli("models", "pull", "acme/typo", "--server", api.url)
    assert done.returncode == 1
    assert f"error: RepoNotFound: no model acme/typo on {hub.url}" in done.stderr


async def test_ls_lists_cached_and_used_models_and_rm_evicts_an_unused_one(
    server: tuple[Server, Hub], tmp_path: Path
) -> None:
    api, _ = server
    await cli("models", "pull", "acme/small", "--server", api.url)
    listed = await cli("models", "ls", "--server", api.url)
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["MODEL", "STATUS", "REVISION", "SIZE", "USED", "BY", "MESSAGE"]
    by_id = {row.split()[0]: row for row in rows}
    assert "downloaded" in by_id["acme/small"]
    assert "emb" in by_id["other/cached"]
    refused = await cli("models", "rm", "other/cached", "--evict", "--server", api.url)
    assert refused.returncode == 1
    assert "MODEL_IN_USE" in refused.stderr
    removed = await cli("models", "rm", "acme/small", "--evict", "--server", api.url)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "model/acme/small undeclared and removed from the cache\n"
    assert not (tmp_path / "hub" / "models--acme--small").exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_progress_bar() -> None:
    out = Terminal()
    shown = _Shown(out, terminal=True)
    for done in (0, 50, 100):
        progress = {
            "done_bytes": done * 1024 * 1024,
            "total_bytes": 100 * 1024 * 1024,
            "percent": float(done),
            "files_done": done // 50,
            "files_total": 2,
        }
        shown.update({"model_id": "m/x", "status": "downloading", "progress": progress})
    shown.end()
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "[###############               ]  50%  50.0 MiB of 100.0 MiB  1/2 files" in text


def test_the_bar_is_empty_at_zero_and_full_at_a_hundred() -> None:
    empty = progress_bar({"percent": 0.0, "done_bytes": 0, "total_bytes": 10}, 10)
    full = progress_bar({"percent": 100.0, "done_bytes": 10, "total_bytes": 10}, 10)
    assert empty.startswith("[          ]")
    assert full.startswith("[##########]")


async def test_download_progress_arrives_on_the_event_stream(server: tuple[Server, Hub]) -> None:
    api, _ = server
    states: list[str] = []
    async with Client(Connection(server=api.url)) as client:
        with anyio.fail_after(DEADLINE):
            async for event, data in client.events("/events"):
                if event != "model":
                    continue
                if data["model_id"] == "other/cached" and not states:
                    # the current models come first: the watch is on, ask for a download
                    await client.request("POST", "/models/acme%2Fsmall/download")
                elif data["model_id"] == "acme/small":
                    states.append(data["status"])
                    if data["status"] == "downloaded":
                        break
    assert "downloading" in states
    assert states[-1] == "downloaded"
