"""Watch the state file the way GitOps tools replace it, and mark the controller dirty.

Watching the file itself breaks on the first editor atomic save, `mv` over it, Kubernetes
ConfigMap `..data` symlink swap or git-sync worktree swap: the watch follows the old inode
and goes silent. So the watcher watches directories (the file's own, plus the directory
holding any symlink on the way to it) and, on any event there, re-reads the file through its
path and compares a content hash with the last one seen. The controller's periodic resync
catches anything a watch could still miss (an NFS mount, a `subPath` ConfigMap).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from watchfiles import awatch

log = logging.getLogger(__name__)


def content_digest(path: Path) -> bytes | None:
    """sha256 of the file's bytes as reached through `path` now, or None if unreadable."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def watch_dirs(path: Path) -> list[Path]:
    """Directories whose events may mean `path` now has other content: its parent, and the
    parent of every symlink met while resolving it (ConfigMap `..data`, git-sync links)."""
    path = Path(os.path.abspath(path))
    dirs = [path.parent]
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        if current.is_symlink():
            dirs.append(current.parent)
            try:
                target = Path(os.path.join(current.parent, os.readlink(current)))
            except OSError:  # the link vanished mid-swap: watch what is known, re-plan later
                break
            dirs.append(target.parent if target.is_file() else target)
            current = Path(os.path.realpath(current))
    existing = {d.resolve() for d in dirs if d.is_dir()}
    return sorted(existing)


class _Follower:
    """Remembers the last content seen at `path` and reports changes to `on_change`."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None],
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.on_events = on_events
        self.last = content_digest(path)

    def check(self) -> None:
        digest = content_digest(self.path)
        if digest != self.last:
            self.last = digest
            log.info("state file %s changed", self.path)
            self.on_change()

    async def follow(self, dirs: list[Path], stop: anyio.Event, debounce_ms: int) -> None:
        """Watch `dirs` until `stop` is set or the symlinks on the way to the file move."""
        try:
            async for _changes in awatch(
                *dirs,
                stop_event=stop,
                debounce=debounce_ms,
                step=10,
                recursive=False,
                yield_on_timeout=True,
                rust_timeout=5_000,
            ):
                self.check()
                if _changes and self.on_events is not None:
                    self.on_events()
                if watch_dirs(self.path) != dirs:
                    return  # a symlink moved: the caller watches the new directories
        except (OSError, RuntimeError) as exc:  # a watched directory vanished mid-swap
            log.debug("re-planning the watch of %s: %s", self.path, exc)
            await anyio.sleep(0.1)


async def watch_state_file(
    path: Path,
    on_change: Callable[[], None],
    *,
    debounce_ms: int = 50,
    on_events: Callable[[], None] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call `on_change()` whenever the content reachable at `path` changes. Runs until
    cancelled; re-plans its watches when the symlinks on the way to `path` change.
    `on_events()` runs after each batch of file events was looked at, changed or not."""
    follower = _Follower(path, on_change, on_events)
    task_status.started()
    while True:
        follower.check()  # changes made while the watches were being (re-)planned
        dirs = watch_dirs(path)
        if not dirs:  # not even the directory exists yet: the resync covers this
            await anyio.sleep(1.0)
            continue
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def run(dirs: list[Path] = dirs, stop: anyio.Event = stop) -> None:
                await follower.follow(dirs, stop, debounce_ms)
                tg.cancel_scope.cancel()

            tg.start_soon(run)
            try:
                await anyio.sleep_forever()
            finally:
                # The watch runs in a worker thread that a cancel cannot interrupt; the stop
                # event ends it within one step instead of one rust timeout.
                stop.set()
