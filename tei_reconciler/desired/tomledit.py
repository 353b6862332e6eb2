"""Edit one `[instances.<name>]` table of a TOML text and nothing else.

tomlkit round-trips a document it did not change, but its edits move comments that sit between
tables (a comment above `[instances.b]` belongs, to tomlkit, to the end of the table before it).
So an edit is a splice: the text of the edited instance's tables is cut out, edited with tomlkit
on its own and put back, and every other byte stays where it was. When the instance is defined
in a form a splice cannot isolate (dotted keys, inline tables), the whole document goes through
tomlkit instead. Either way the result is checked: it must parse to exactly the intended data.
"""

from __future__ import annotations

import copy
import enum
import re
import tomllib
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import Item, Table

from tei_reconciler.desired.fields import DATE_TIMES
from tei_reconciler.desired.tomlpositions import scan

Fields = dict[str, Any]
_LONE_LF = re.compile(r"(?<!\r)\n")


def plain(field: str, value: object) -> object:
    """A caller's value as TOML data: enums as their text, tuples as lists, and the text of a
    date-time field (as JSON carries it) as a date-time."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(field, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(field, v) for k, v in value.items()}
    if field in DATE_TIMES and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def to_item(value: object) -> Item:
    """A TOML item for plain data; tables become inline tables so they stay on their key's line."""
    if isinstance(value, Mapping):
        table = tomlkit.inline_table()
        for k, v in value.items():
            table[k] = to_item(v)
        return table
    if isinstance(value, list):
        array = tomlkit.array()
        for v in value:
            array.append(to_item(v))
        return array
    return tomlkit.item(value)


def _unwrap(value: object) -> object:
    return value.unwrap() if isinstance(value, Item | Container) else value


def _update(table: MutableMapping[str, Any], fields: Mapping[str, object]) -> None:
    """Make `table` hold exactly `fields`, touching only the keys whose value changes, so that
    comments on unchanged keys survive."""
    for key in [k for k in table if k not in fields]:
        del table[key]
    for key, value in fields.items():
        current = table.get(key)
        if key in table and _unwrap(current) == value:
            continue
        if isinstance(value, Mapping) and isinstance(current, MutableMapping):
            _update(current, value)
        else:
            table[key] = to_item(value)


def render(name: str, fields: Mapping[str, object]) -> str:
    """A new `[instances.<name>]` table as text."""
    doc = tomlkit.document()
    instances = tomlkit.table(is_super_table=True)
    table = tomlkit.table()
    for key, value in fields.items():
        table[key] = to_item(value)
    instances[name] = table
    doc["instances"] = instances
    return doc.as_string()


def _expected(doc: Mapping[str, Any], name: str, fields: Fields | None) -> dict[str, Any]:
    result = copy.deepcopy(dict(doc))
    instances = result.get("instances")
    if not isinstance(instances, dict):
        instances = result["instances"] = {}
    if fields is None:
        instances.pop(name, None)
    else:
        instances[name] = fields
    return result


def _normal(doc: dict[str, Any]) -> dict[str, Any]:
    """An empty `instances` table and no table at all mean the same."""
    return {k: v for k, v in doc.items() if not (k == "instances" and v == {})}


def _splice(text: str, name: str, fields: Fields | None) -> str | None:
    """The splice edit, or None when the instance is not made only of its own header tables."""
    crlf = "\r\n" in text  # a Windows file: the lines we write end the same way

    def eol(piece: str) -> str:
        return _LONE_LF.sub("\r\n", piece) if crlf else piece

    layout = scan(text)
    prefix = ("instances", name)
    spans = layout.table_spans(prefix)
    for statement in layout.keyvals_touching(prefix):
        if not any(a <= statement.start < b for a, b in spans):
            return None
    if any(s.kind == "array" and s.path[:1] == prefix[:1] for s in layout.statements):
        return None
    if not spans:
        if fields is None:
            return text
        if text and not text.endswith("\n"):
            text += eol("\n")
        blank = text.endswith(("\n\n", "\n\r\n"))
        separator = eol("\n") if text.strip() and not blank else ""
        return text + separator + eol(render(name, fields))
    if fields is None:
        pieces = [""] * len(spans)
    else:
        try:
            segment = tomlkit.parse("".join(text[a:b] for a, b in spans))
        except tomlkit.exceptions.TOMLKitError:
            return None
        table = segment.get("instances", {}).get(name)
        if not isinstance(table, Table):
            return None
        _update(table, fields)
        pieces = _split(segment.as_string(), [layout.statement_at(a).path for a, _ in spans])
    out = [text[: spans[0][0]]]
    for i, (piece, (_, end)) in enumerate(zip(pieces, spans, strict=True)):
        out.append(eol(piece))
        out.append(text[end : spans[i + 1][0]] if i + 1 < len(spans) else text[end:])
    return "".join(out)


def _split(edited: str, headers: list[tuple[str, ...]]) -> list[str]:
    """The edited tables, one piece per original table when they still match one to one, so
    each goes back where it was; otherwise everything in the first place."""
    tables = [s for s in scan(edited).statements if s.kind != "keyval"]
    starts = [s.start for s in tables]
    paths = [s.path for s in tables]
    if paths != headers:
        return [edited] + [""] * (len(headers) - 1)
    ends = [*starts[1:], len(edited)]
    return [edited[a:b] for a, b in zip(starts, ends, strict=True)]


def _whole(text: str, name: str, fields: Fields | None) -> str:
    """The same edit through tomlkit on the whole document (may move comments between tables)."""
    doc = tomlkit.parse(text)
    instances = doc.get("instances")
    if not isinstance(instances, MutableMapping):
        if instances is not None:
            return text
        instances = tomlkit.table(is_super_table=True)
        doc["instances"] = instances
    current = instances.get(name)
    if fields is None:
        if name in instances:
            del instances[name]
    elif isinstance(current, MutableMapping):
        _update(current, fields)
    else:
        table = tomlkit.table()
        for key, value in fields.items():
            table[key] = to_item(value)
        instances[name] = table
    return doc.as_string()


def rewrite_instance(text: str, name: str, fields: Fields | None) -> tuple[str, bool]:
    """`text` with instance `name` set to exactly `fields` (plain data), or removed (None).

    `text` must be valid TOML. Returns the new text and whether it parses to exactly the
    intended data (False only for data TOML cannot hold as given; the caller's validation then
    says what is wrong with it).
    """
    expected = _expected(tomllib.loads(text), name, fields)
    last = text
    for edit in (_splice, _whole):
        candidate = edit(text, name, fields)
        if candidate is None:
            continue
        last = candidate
        try:
            if _normal(tomllib.loads(candidate)) == _normal(expected):
                return candidate, True
        except tomllib.TOMLDecodeError:
            continue
    return last, False
