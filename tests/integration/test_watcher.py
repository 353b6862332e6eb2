"""The watcher sees every way a state file gets replaced, and nothing that is no change."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import anyio
import pytest

from tei_reconciler.control.watcher import watch_dirs, watch_state_file

from .reconciler_harness import fast_settings, instance_toml, reconciler, write_atomic
from support.waiting import eventually

pytestmark = pytest.mark.anyio


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, Counter]]:
    path = tmp_path / "state.toml"
    path.write_text("# v0\n")
    counter = Counter()
    async with anyio.create_task_group() as tg:
        await tg.start(watch_state_file, path, counter)
        yield path, counter
        tg.cancel_scope.cancel()


async def changed(counter: Counter, before: int) -> None:
    await eventually(lambda: counter.count > before, within=10, what="a change notification")


async def test_an_in_place_write_is_seen(watched: tuple[Path, Counter]) -> None:
    path, counter = watched
    path.write_text("# v1\n")
    await changed(counter, 0)


async def test_an_editor_atomic_save_is_seen(watched: tuple[Path, Counter]) -> None:
    path, counter = watched
    write_atomic(path, "# v1\n")
    await changed(counter, 0)
    write_atomic(path, "# v2\n")  # the second save: the old inode is gone, the watch is not
    await changed(counter, 1)


async def test_mv_over_the_file_is_seen(watched: tuple[Path, Counter], tmp_path: Path) -> None:
    path, counter = watched
    elsewhere = tmp_path / "new.toml"
    elsewhere.write_text("# moved\n")
    shutil.move(str(elsewhere), str(path))
    await changed(counter, 0)


async def test_touching_without_changing_content_is_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_text("# v0\n")
    changes, batches = Counter(), Counter()
    non_changes: list[Callable[[], object]] = [
        lambda: os.utime(path),
        lambda: write_atomic(path, "# v1\n"),
        lambda: (tmp_path / "unrelated.txt").write_text("x"),
        lambda: path.write_text("# v1\n"),  # in place, same bytes
    ]
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_state_file, path, changes, on_events=batches))
        while changes.count == 0:  # a first real change: the watches are in place from here on
            path.write_text("# v1\n")
            with anyio.move_on_after(1):
                await changed(changes, 0)
        for non_change in non_changes:
            seen = batches.count
            non_change()
            # Each one in a batch of its own: the watcher looked at it, and it changed nothing.
            await eventually(lambda: batches.count > seen, within=10, what="the event seen")  # noqa: B023
            assert changes.count == 1
        write_atomic(path, "# v9\n")
        await changed(changes, 1)
        tg.cancel_scope.cancel()
    assert changes.count == 2


def configmap_publish(directory: Path, text: str, version: int) -> None:
    """kubelet's atomic_writer: new timestamped dir, `..data_tmp` link, rename over `..data`."""
    stamp = directory / f"..2026_01_01_00_00_0{version}.000{version}"
    stamp.mkdir()
    (stamp / "state.toml").write_text(text)
    tmp_link = directory / "..data_tmp"
    tmp_link.symlink_to(stamp.name)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.replace(tmp_link, directory / "..data")
    if not (directory / "state.toml").is_symlink():
        (directory / "state.toml").symlink_to("..data/state.toml")
    if old is not None:
        shutil.rmtree(directory / old)


async def test_a_configmap_symlink_swap_is_seen(tmp_path: Path) -> None:
    directory = tmp_path / "cm"
    directory.mkdir()
    configmap_publish(directory, "# v1\n", 1)
    counter = Counter()
    async with anyio.create_task_group() as tg:
        await tg.start(watch_state_file, directory / "state.toml", counter)
        configmap_publish(directory, "# v2\n", 2)
        await changed(counter, 0)
        configmap_publish(directory, "# v3\n", 3)
        await changed(counter, 1)
        tg.cancel_scope.cancel()


async def test_a_git_sync_worktree_swap_is_seen(tmp_path: Path) -> None:
    """git-sync: `/git/repo` is a symlink to a worktree; a new commit swaps the link."""
    root = tmp_path / "git"
    (root / "wt1").mkdir(parents=True)
    (root / "wt1" / "state.toml").write_text("# commit 1\n")
    (root / "repo").symlink_to("wt1")
    path = root / "repo" / "state.toml"
    assert root in watch_dirs(path)
    counter = Counter()
    async with anyio.create_task_group() as tg:
        await tg.start(watch_state_file, path, counter)
        for n in (2, 3):
            (root / f"wt{n}").mkdir()
            (root / f"wt{n}" / "state.toml").write_text(f"# commit {n}\n")
            (root / "repo.tmp").symlink_to(f"wt{n}")
            os.replace(root / "repo.tmp", root / "repo")
            shutil.rmtree(root / f"wt{n - 1}")
            await changed(counter, n - 2)
        tg.cancel_scope.cancel()


async def test_a_configmap_update_makes_the_reconciler_converge(tmp_path: Path) -> None:
    """The resync is an hour away: only the watcher can have noticed the swap."""
    settings = fast_settings(tmp_path, resync_interval_secs=3600.0)
    directory = Path(settings.state_file).parent
    directory.mkdir(parents=True)
    configmap_publish(directory, "", 1)
    async with reconciler(settings) as h:
        configmap_publish(directory, instance_toml("alpha"), 2)
        await h.ready("alpha")
