"""Copy-truncate rotation of the logs children write to (instances, Envoy).

A child keeps its append-mode descriptor, so its log is copied to `<log>.1` (older backups
shift up to `<log>.<backups>`) and then emptied in place; the child simply continues at the
start of the emptied file. When the copy cannot be written (the disk is full, a quota is
reached), the log is emptied all the same, without a backup: once a disk is full a copy can
never succeed, and a log that keeps growing only makes it fuller. Losing those lines is the
lesser harm; the caller says so in its own log.
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
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
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
