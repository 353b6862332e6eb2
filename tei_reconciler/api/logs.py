"""Instance log files: slices with Python semantics, and a follow stream.

tei-manager read the whole log into memory for every request and answered 500 on a non-UTF-8
byte. Here a slice costs memory for the lines returned only: line counting streams the file in
chunks, and the first wanted line is found by scanning from whichever end is nearer (a tail
seeks from the end). Bytes that are not UTF-8 are replaced. Lines follow Rust's `str::lines`,
which tei-manager used: split on `\\n`, a trailing `\\r` dropped, no empty last line after a
final newline. The path is never built from request input: callers pass a name that is
already known to be an instance (DNS-1123, so no path tricks are possible anyway).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio

from tei_reconciler.api.schemas import LogsResponse

CHUNK = 64 * 1024
_SEEN = 64  # bytes a follower re-reads to notice that the file was rotated under it


def normalise(total: int, start: int | None, end: int | None) -> tuple[int, int]:
    """`slice(start, end).indices(total)` for step 1, as tei-manager echoes them back."""
    lo = 0 if start is None else (max(total + start, 0) if start < 0 else min(start, total))
    hi = total if end is None else (max(total + end, 0) if end < 0 else min(end, total))
    return lo, hi


def _decode(raw: bytes) -> str:
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    return raw.decode("utf-8", errors="replace")


def count_lines(f: BinaryIO) -> int:
    """Number of lines as Rust's `str::lines` counts them, reading in chunks."""
    f.seek(0)
    newlines = 0
    last = b""
    while chunk := f.read(CHUNK):
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
    return newlines + (1 if last not in {b"", b"\n"} else 0)


def _offset_forward(f: BinaryIO, index: int) -> int:
    """Byte offset where line `index` starts, scanning from the beginning."""
    if index == 0:
        return 0
    f.seek(0)
    seen = 0
    pos = 0
    while chunk := f.read(CHUNK):
        count = chunk.count(b"\n")
        if seen + count >= index:
            cut = -1
            for _ in range(index - seen):
                cut = chunk.index(b"\n", cut + 1)
            return pos + cut + 1
        seen += count
        pos += len(chunk)
    return pos


def _offset_backward(f: BinaryIO, size: int, newlines: int, index: int) -> int:
    """Byte offset where line `index` starts, scanning from the end of the file."""
    if index == 0:
        return 0
    wanted = newlines - index + 1  # the index-th newline, counted from the end
    pos = size
    seen = 0
    while pos > 0:
        step = min(CHUNK, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        count = chunk.count(b"\n")
        if seen + count >= wanted:
            cut = len(chunk)
            for _ in range(wanted - seen):
                cut = chunk.rindex(b"\n", 0, cut)
            return pos + cut + 1
        seen += count
    return 0


def read_slice(path: Path, start: int | None, end: int | None) -> LogsResponse:
    """`lines[start:end]` of the log file; an absent file reads as empty."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        lo, hi = normalise(0, start, end)
        return LogsResponse(lines=[], start=lo, end=hi, total_lines=0)
    with f:
        total = count_lines(f)
        lo, hi = normalise(total, start, end)
        lines: list[str] = []
        if lo < hi:
            size = f.seek(0, os.SEEK_END)
            f.seek(size - 1)
            newlines = total if f.read(1) == b"\n" else total - 1
            if lo > total // 2:
                offset = _offset_backward(f, size, newlines, lo)
            else:
                offset = _offset_forward(f, lo)
            f.seek(offset)
            for _ in range(hi - lo):
                raw = f.readline()
                if not raw:
                    break
                lines.append(_decode(raw))
        return LogsResponse(lines=lines, start=lo, end=hi, total_lines=total)


async def follow(
    path: Path, first_line: int, *, poll_interval: float = 0.25
) -> AsyncIterator[tuple[int, str]]:
    """Yield (index, line) for every complete line from `first_line` on, as the file grows.

    Survives copy-truncate rotation: when the file shrinks, or the bytes just before where
    reading stopped are no longer there (the emptied file has already grown past that point
    again), reading restarts at its start. Runs until cancelled (the client disconnects or
    the server shuts down).
    """
    index = first_line
    offset: int | None = None
    seen = b""  # the last bytes read, which end at `offset` while the file is not rotated
    pending = b""
    while True:
        try:
            size = (await anyio.Path(path).stat()).st_size
        except FileNotFoundError:
            size = -1
        if size >= 0:
            if offset is None:
                offset = await anyio.to_thread.run_sync(_offset_of, path, first_line)
            if size < offset or (
                seen
                and await anyio.to_thread.run_sync(_read_at, path, offset - len(seen), len(seen))
                != seen
            ):  # rotated (copy-truncate): start over
                offset, pending, seen = 0, b"", b""
            if size > offset:
                data = await anyio.to_thread.run_sync(_read_at, path, offset, CHUNK * 16)
                offset += len(data)
                seen = (seen + data)[-_SEEN:]
                pending += data
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield index, _decode(raw)
                    index += 1
                continue
        await anyio.sleep(poll_interval)


def _offset_of(path: Path, index: int) -> int:
    with path.open("rb") as f:
        return _offset_forward(f, index)


def _read_at(path: Path, offset: int, limit: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(limit)
