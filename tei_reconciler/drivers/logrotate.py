"""Copy-truncate rotation of the logs children write to (instances, Envoy).

A child keeps its append-mode descriptor, so its log is copied to `<log>.1` (older backups
shift up to `<log>.<backups>`) and then emptied in place; the child simply continues at the
start of the emptied file. When the copy cannot be written (the disk is full, a quota is
reached), the log is emptied all the same, without a backup: once a disk is full a copy can
never succeed, and a log that keeps growing only makes it fuller. Losing those lines is the
lesser harm; the caller says so in its own log.

When a rollout's new process takes over its instance, the logs are handed over by renames
(`hand_over_log`): each process keeps writing to the file it opened.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Copy = Callable[[Path, Path], object]  # shutil.copyfile's shape: the seam tests fill a disk at


class Done(enum.Enum):
    KEPT = "kept"  # within max_bytes (or no log): nothing done
    ROTATED = "rotated"  # copied to <log>.1, then emptied
    TRUNCATED = "truncated"  # emptied without a backup: the copy could not be written


@dataclass(frozen=True)
class Rotation:
    """What `rotate_log` did (true when the log was emptied) and, for TRUNCATED, why."""

    done: Done
    error: str = ""

    def __bool__(self) -> bool:
        return self.done is not Done.KEPT


def rotate_log(
    path: Path, *, max_bytes: int, backups: int, copy: Copy = shutil.copyfile
) -> Rotation:
    """Rotate `path` once it holds more than `max_bytes`, keeping `backups` copies."""
    try:
        if path.stat().st_size <= max_bytes:
            return Rotation(Done.KEPT)
    except FileNotFoundError:
        return Rotation(Done.KEPT)
    if backups <= 0:
        os.truncate(path, 0)
        return Rotation(Done.ROTATED)
    _shift_backups(path, backups)
    backup = path.with_name(f"{path.name}.1")
    try:
        copy(path, backup)
    except OSError as exc:
        with contextlib.suppress(OSError):
            backup.unlink()  # a partial copy only holds space
        os.truncate(path, 0)
        return Rotation(Done.TRUNCATED, exc.strerror or str(exc))
    os.truncate(path, 0)
    return Rotation(Done.ROTATED)


def _shift_backups(path: Path, backups: int) -> None:
    """`log.1` becomes `log.2` and so on, the oldest dropped: room for a new `log.1`."""
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))


def hand_over_log(path: Path, new: Path, *, backups: int) -> Path | None:
    """A rollout's new process took over the instance: its log (`new`) becomes the instance's
    log (`path`), and the old process's becomes the first backup, where it goes on writing
    until it stops (a rename keeps each process's open file). Returns where the old process's
    output is now (None: no backups are kept, so nowhere that can be read)."""
    moved = path.with_name(f"{path.name}.1")
    if backups > 0 and path.exists():
        _shift_backups(path, backups)
        os.replace(path, moved)
    if new.exists():
        os.replace(new, path)
    return moved if backups > 0 else None
