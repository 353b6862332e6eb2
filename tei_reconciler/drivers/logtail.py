"""The last lines an instance's process wrote, kept with its exit (kubectl's Last State).

Read once when a process ends, from its own log file (the child's stdout and stderr, nothing
of the reconciler's): at most `LINES` lines out of the last `MAX_BYTES` bytes written since
that process started, each cut to `LINE_CHARS` characters. TEI writes JSON lines
(`--json-output`); those become `LEVEL message`. These lines travel further than the log file
(API, CLI, dashboard), so anything shaped like a credential is masked: TEI prints its
arguments at start (`api_key: Some("...")`), and a Hugging Face token or a bearer token may
appear in an error.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

LINES = 8
MAX_BYTES = 8192
LINE_CHARS = 400

_SECRETS = (
    # key = value, key: value, "key":"value", key: Some("value") (Rust's Debug of an Option)
    re.compile(
        r"(?i)((?:api[_-]?key|token|secret|password|passwd|authorization)[\"']?\s*[:=]\s*"
        r"(?:Some\()?[\"']?(?:(?:bearer|basic|token)\s+)?)(?!\*\*\*)[^\s\"',)}]+"
    ),
    re.compile(r"(?i)(--(?:api-key|hf-token|token|password)[= ])\S+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(hf_)[A-Za-z0-9]{8,}"),
)


def redact(line: str) -> str:
    for pattern in _SECRETS:
        line = pattern.sub(r"\1***", line)
    return line


def readable(line: str) -> str:
    """A JSON log record as `LEVEL message` (TEI's flat keys or tracing's `fields.message`);
    any other line as it is."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    fields = record.get("fields")
    message = record.get("message")
    if message is None and isinstance(fields, dict):
        message = fields.get("message")
    if not isinstance(message, str):
        return line
    level = record.get("level")
    return f"{level} {message}" if isinstance(level, str) else message


def log_size(path: Path) -> int:
    """Where the next process's output will start (0 when there is no log yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def last_lines(path: Path, *, since: int = 0) -> tuple[str, ...]:
    """The last lines written to `path` from byte `since` on (the start of the process that
    just ended); the whole file's end when it was rotated below `since` meanwhile."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = since if 0 <= since <= size else 0
            begin = max(start, size - MAX_BYTES)
            f.seek(begin)
            data = f.read(size - begin)
    except OSError:
        return ()
    if begin > start:  # cut inside a line: drop the partial first one
        data = data.partition(b"\n")[2]
    text = data.decode("utf-8", errors="replace")
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    out = []
    for line in lines[-LINES:]:
        shown = redact(readable(line))
        if len(shown) > LINE_CHARS:
            shown = shown[: LINE_CHARS - 1] + "…"
        out.append(shown)
    return tuple(out)
