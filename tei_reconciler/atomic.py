"""Atomic file replacement, for the state file and the controller's status file.

A unique temp file in the same directory, fsync, rename over the target, fsync the
directory: a reader or a crash at any point sees the old file or the new one, never a mix,
and two writers never share a temp path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, keep_mode: bool = False) -> None:
    """Replace `path` with `data`. With `keep_mode`, the new file keeps the old one's mode
    (0o644 when there was none). Raises OSError; a failed write leaves no temp file."""
    mode = 0o644
    if keep_mode:
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if keep_mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
