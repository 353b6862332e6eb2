"""Where things are in a TOML document's text: key positions and table spans.

Neither tomllib nor tomlkit reports where a key sits, yet every validation problem must name
its line and column, and an edit must leave everything outside the edited table byte for byte.
This module scans the source once, statement by statement (a header, or a key/value pair that
may span several lines), and records where each key path starts and where each table's text
begins and ends. It assumes the document already parses; callers verify any splice they make.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    """One header (`[a.b]`, `[[a]]`) or key/value pair, with its full key path."""

    kind: str  # "table" | "array" | "keyval"
    path: KeyPath  # for a keyval: the enclosing table's path plus the (dotted) key
    start: int  # offset of the statement's first character in the text
    end: int  # offset just past its last line (line break included)
    line: int  # 1-based line of the key
    column: int  # 1-based column of the key


@dataclass
class Layout:
    """The scanned document: statements in order, and the first position of each key path."""

    text: str
    statements: list[Statement] = field(default_factory=list)
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: KeyPath) -> tuple[int, int]:
        """(line, column) of the longest recorded prefix of `path`; (0, 0) when none is."""
        for n in range(len(path), 0, -1):
            found = self.positions.get(path[:n])
            if found is not None:
                return found
        return (0, 0)

    def table_spans(self, prefix: KeyPath) -> list[tuple[int, int]]:
        """Text spans of every header table at or below `prefix`, each from its header to the
        start of the comments and blank lines that lead into the next header (or end the file).
        """
        headers = [s for s in self.statements if s.kind != "keyval"]
        spans: list[tuple[int, int]] = []
        for i, header in enumerate(headers):
            if header.path[: len(prefix)] != prefix:
                continue
            body_end = headers[i + 1].start if i + 1 < len(headers) else len(self.text)
            spans.append((header.start, self._content_end(header, body_end)))
        return spans

    def statement_at(self, offset: int) -> Statement:
        """The statement that starts at `offset`."""
        return next(s for s in self.statements if s.start == offset)

    def keyvals_touching(self, prefix: KeyPath) -> list[Statement]:
        """Key/value statements that define `prefix`, something inside it, or a parent of it."""
        return [
            s
            for s in self.statements
            if s.kind == "keyval"
            and (s.path[: len(prefix)] == prefix or prefix[: len(s.path)] == s.path)
        ]

    def _content_end(self, header: Statement, limit: int) -> int:
        last = header.end
        for s in self.statements:
            if header.start < s.start < limit and s.kind == "keyval":
                last = max(last, s.end)
        return last


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def parse_key(text: str, i: int) -> tuple[KeyPath, list[int]]:
    """Parse a (possibly dotted, possibly quoted) key starting at `text[i]`.

    Returns the key parts and the offset where each part starts. Raises ValueError when there
    is no key there.
    """
    parts: list[str] = []
    offsets: list[int] = []
    while True:
        i = _skip_ws(text, i)
        offsets.append(i)
        if i < len(text) and text[i] in "\"'":
            quote = text[i]
            j = i + 1
            while j < len(text) and text[j] != quote and text[j] != "\n":
                j += 2 if quote == '"' and text[j] == "\\" else 1
            if j >= len(text) or text[j] != quote:
                raise ValueError("unterminated quoted key")
            parts.append(str(tomllib.loads(f"k = {text[i : j + 1]}")["k"]))
            i = j + 1
        else:
            match = _BARE_KEY.match(text, i)
            if match is None:
                raise ValueError("no key")
            parts.append(match.group())
            i = match.end()
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return tuple(parts), offsets


def _line_col(text: str, offset: int, line_starts: list[int]) -> tuple[int, int]:
    lo, hi = 0, len(line_starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if line_starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo + 1, offset - line_starts[lo] + 1


def scan(text: str, wanted: Iterable[KeyPath] | None = None) -> Layout:
    """Scan a document that tomllib accepts. Unrecognised lines are skipped, never raised.

    With `wanted`, the scan stops once each of those key paths has a position (locating a
    few problems near the top of a huge file costs those lines, not the whole file)."""
    layout = Layout(text)
    missing = None if wanted is None else set(wanted)
    lines = text.splitlines(keepends=True)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    table: KeyPath = ()
    n = 0
    while n < len(lines):
        line = lines[n]
        offset = starts[n]
        body = len(line) - len(line.lstrip(" \t"))
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            n += 1
            continue
        try:
            if stripped.startswith("["):
                is_array = stripped.startswith("[[")
                key, offsets = parse_key(line, body + (2 if is_array else 1))
                table = key
                column = offsets[0] + 1
                layout.statements.append(
                    Statement(
                        kind="array" if is_array else "table",
                        path=key,
                        start=offset,
                        end=offset + len(line),
                        line=n + 1,
                        column=column,
                    )
                )
                for depth, part_offset in enumerate(offsets, start=1):
                    layout.positions.setdefault(key[:depth], (n + 1, part_offset + 1))
                    if missing is not None:
                        missing.discard(key[:depth])
                n += 1
                if missing is not None and not missing:
                    break
                continue
            key, _ = parse_key(line, body)
        except ValueError:
            n += 1
            continue
        last = _value_end(lines, n)
        full = table + key
        layout.statements.append(
            Statement(
                kind="keyval",
                path=full,
                start=offset,
                end=starts[last + 1],
                line=n + 1,
                column=body + 1,
            )
        )
        for depth in range(len(table) + 1, len(full) + 1):
            layout.positions.setdefault(full[:depth], (n + 1, body + 1))
            if missing is not None:
                missing.discard(full[:depth])
        n = last + 1
        if missing is not None and not missing:
            break
    return layout


def _value_end(lines: list[str], first: int) -> int:
    """Index of the last line of the key/value pair that starts on line `first`."""
    fragment = ""
    for n in range(first, len(lines)):
        fragment += lines[n]
        try:
            tomllib.loads(fragment)
        except tomllib.TOMLDecodeError:
            continue
        return n
    return len(lines) - 1


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    starts = [0]
    for ln in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(ln))
    return _line_col(text, offset, starts)
