"""Check a whole decoded state document: every problem at once, each at its exact key.

The state file is decoded by hand rather than by `msgspec.convert` so that every problem in a
file is reported at once, each with the exact key it is about. Problems carry a key path; the
state file module turns key paths into line and column. Each key's rule comes from the field
table (`fields.py`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import NamedTuple

from tei_reconciler.desired.fields import INSTANCE_KEYS, PORTS, REQUIRED, RULES
from tei_reconciler.desired.rules import Invalid, is_int, show
from tei_reconciler.desired.spec import NAME_RULE, InstanceSpec, is_instance_name
from tei_reconciler.desired.tomlpositions import KeyPath
from tei_reconciler.errors import Problem

TOP_LEVEL_KEYS = ("defaults", "instances", "models")


class Issue(NamedTuple):
    """A problem before it is located in a file: the key path it is about, and what is wrong."""

    key: KeyPath
    message: str
    code: str = "invalid"

    def problem(self, path: str = "", line: int = 0, column: int = 0) -> Problem:
        field = ".".join(self.key)
        return Problem(
            path=path, line=line, column=column, field=field, message=self.message, code=self.code
        )


class Issues(list[Issue]):
    """The issues found, at most `limit` of them; the rest are only counted (`more`), so a
    huge file with a million bad keys costs a count, not a million messages."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.more = 0

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self) >= self.limit

    def append(self, issue: Issue) -> None:
        if self.full:
            self.more += 1
        else:
            super().append(issue)

    def add(self, issue: Callable[[], Issue]) -> None:
        """Record the issue `issue()` builds, or only count it once full (never built then:
        a "did you mean" suggestion costs a difflib search)."""
        if self.full:
            self.more += 1
        else:
            self.append(issue())


def suggest(key: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known key, or nothing."""
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def accepts(key: str, value: object) -> bool:
    """Whether `value` passes the rule of instance field `key` on its own (property tests
    generate values through this, so they only produce what the validator accepts)."""
    rule = RULES.get(key)
    if rule is None:
        return False
    try:
        rule.check(value)
    except Invalid:
        return False
    return True


def _unknown_key(where: KeyPath, key: str) -> Issue:
    hint = " (the table key is the instance's name)" if key == "name" else ""
    hint = hint or suggest(key, INSTANCE_KEYS)
    return Issue((*where, key), f"unknown key {key!r}{hint}", "unknown_key")


def _unknown_top_level_key(key: str) -> Issue:
    hint = suggest(key, TOP_LEVEL_KEYS) or (
        " (instance fields go in an [instances.<name>] table)" if key in INSTANCE_KEYS else ""
    )
    return Issue((key,), f"unknown key {key!r}{hint}", "unknown_key")


def _check_table(table: Mapping[str, object], where: KeyPath, issues: Issues) -> dict[str, object]:
    """Validate each key of one instance or defaults table; return the converted values."""
    values: dict[str, object] = {}
    for key, value in table.items():
        rule = RULES.get(key)
        if rule is None:
            issues.add(partial(_unknown_key, where, key))
            continue
        try:
            values[key] = rule.check(value)
        except Invalid as exc:
            issues.append(Issue((*where, key), f"{key} {exc}"))
    return values


def check_state(
    doc: Mapping[str, object],
    *,
    reserved_ports: frozenset[int] = frozenset(),
    limit: int | None = None,
) -> tuple[dict[str, InstanceSpec], Issues]:
    """Validate a decoded state document (what tomllib returns) in full.

    Returns the instances (meaningful only when there are no issues) and the issues found: at
    most `limit` of them, the rest counted in `Issues.more`. `[defaults]` is merged under each
    instance (`env` per variable); a problem in a default is reported once, at its own key.
    """
    issues = Issues(limit)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            issues.add(partial(_unknown_top_level_key, key))
    raw_defaults = doc.get("defaults", {})
    raw_instances = doc.get("instances", {})
    defaults: dict[str, object] = {}
    if isinstance(raw_defaults, dict):
        defaults = _check_table(raw_defaults, ("defaults",), issues)
    else:
        issues.append(Issue(("defaults",), "defaults must be a table"))
    if not isinstance(raw_instances, dict):
        issues.append(Issue(("instances",), "instances must be a table of [instances.<name>]"))
        raw_instances = {}

    specs: dict[str, InstanceSpec] = {}
    ports: dict[int, KeyPath] = {}
    for name, table in raw_instances.items():
        where: KeyPath = ("instances", name)
        if not is_instance_name(name):
            issues.append(
                Issue(
                    where,
                    f"instance name {show(name)} {NAME_RULE}",
                )
            )
        if not isinstance(table, dict):
            issues.append(Issue(where, f"instances.{name} must be a table"))
            continue
        own = _check_table(table, where, issues)
        values = {**defaults, **own}
        if isinstance(defaults.get("env"), dict) and isinstance(own.get("env"), dict):
            values["env"] = {**defaults["env"], **own["env"]}  # type: ignore[dict-item]
        for key in REQUIRED:
            if key not in table and key not in defaults:
                issues.append(Issue(where, f"{key} is required"))
        for key in PORTS:
            port = values.get(key)
            if not is_int(port):
                continue
            at: KeyPath = (*where, key) if key in own else ("defaults", key)
            if port in reserved_ports:
                issues.append(
                    Issue(
                        at, f"{key} {port} is the manager's own API or gRPC port", "port_conflict"
                    )
                )
            elif port in ports:
                first = ports[port]
                issues.append(
                    Issue(
                        at,
                        f"{key} {port} is already used by {'.'.join(first)}",
                        "port_conflict",
                    )
                )
            else:
                ports[port] = (*where, key)
        if all(key in values for key in REQUIRED):
            specs[name] = InstanceSpec(name=name, **values)  # type: ignore[arg-type]
    unique = Issues(limit)
    unique.extend(dict.fromkeys(issues))
    unique.more = issues.more
    return specs, unique
