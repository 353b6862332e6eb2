"""The field table: what each `InstanceSpec` field is, written once.

Per field: the rule its value must pass (`rules.py`), and either the TEI flag it is passed as
(with how its value is written) or nothing, for the manager's own fields. Everything that
lists fields derives from this table: the state file's keys and checks (`check.py`), the
command line (`drivers.process.build_argv`), the flags `extra_args` may not repeat, the REST
request body and so the OpenAPI document (`api.schemas`). A test fails when a field of
`InstanceSpec` has no entry here, or an entry no field. Adding a field is: the field in
`InstanceSpec`, its entry here, its row in the README's table, and a test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import msgspec

from tei_reconciler.desired.rules import (
    ABSOLUTE_PATH,
    BOOL,
    DATE_TIME,
    ENV,
    GPU,
    MODEL_ID,
    PORT,
    POSITIVE_INT,
    SECONDS,
    TEXT,
    Invalid,
    Rule,
    choice,
    no_nul,
    strings,
)
from tei_reconciler.desired.spec import DesiredRun, Dtype, InstanceSpec, Pooling, Rollout


def _true_false(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class Field:
    """One instance field. `rule` is None only for `name`, the key of its table."""

    rule: Rule | None
    flag: str | None = None  # the TEI flag; None: the manager's own field, never a flag
    aliases: tuple[str, ...] = ()  # other spellings TEI accepts for the flag
    render: Callable[[Any], str] = str  # the flag's value as text
    assigned: bool = False  # the flag carries what the controller assigned when unset (ports)
    rest: bool = True  # settable in a REST body (False: only through its own route)


def _not_managed(arg: str) -> None:
    no_nul(arg)
    flag = arg.split("=", 1)[0]
    if flag in SECRET_FLAGS:
        raise Invalid(
            f"may not pass {flag}: a key on the command line shows in the process list; "
            f"put it in a file and set {SECRET_FLAGS[flag]}"
        )
    if flag in MANAGED_FLAGS:
        instead = MANAGED_FLAGS[flag]
        hint = f" (set {instead} instead)" if instead else ""
        raise Invalid(f"may not repeat {flag}: the reconciler passes it itself{hint}")


FIELDS: dict[str, Field] = {
    # Passed to TEI, in command-line order (adoption compares command lines: keep the order).
    "model_id": Field(MODEL_ID, flag="--model-id"),
    "port": Field(PORT, flag="--port", aliases=("-p",), assigned=True),
    "prometheus_port": Field(PORT, flag="--prometheus-port", assigned=True),
    "max_batch_tokens": Field(POSITIVE_INT, flag="--max-batch-tokens"),
    "max_concurrent_requests": Field(POSITIVE_INT, flag="--max-concurrent-requests"),
    "max_client_batch_size": Field(POSITIVE_INT, flag="--max-client-batch-size"),
    "revision": Field(TEXT, flag="--revision"),
    "max_batch_requests": Field(POSITIVE_INT, flag="--max-batch-requests"),
    "pooling": Field(choice(Pooling), flag="--pooling"),
    "dtype": Field(choice(Dtype), flag="--dtype"),
    "served_model_name": Field(TEXT, flag="--served-model-name"),
    "tokenization_workers": Field(POSITIVE_INT, flag="--tokenization-workers"),
    "auto_truncate": Field(BOOL, flag="--auto-truncate", render=_true_false),
    # The manager's own: no flag of their own.
    "extra_args": Field(strings(_not_managed)),  # more TEI flags, after the reconciler's
    "name": Field(None),  # the table's key: log file, markers, routes
    "state": Field(choice(DesiredRun)),  # whether the planner keeps a process
    "gpu": Field(GPU),  # CUDA_VISIBLE_DEVICES
    "env": Field(ENV),  # the child's environment
    "api_key_file": Field(ABSOLUTE_PATH),  # read at start, given to TEI as API_KEY
    "startup_timeout_secs": Field(SECONDS),  # probes; unset: the manager's setting
    "health_interval_secs": Field(SECONDS),
    "health_timeout_secs": Field(SECONDS),
    "failure_threshold": Field(POSITIVE_INT),
    "restarted_at": Field(DATE_TIME, rest=False),  # set by POST /restart; changes the hash
    "rollout": Field(choice(Rollout)),  # surge or recreate; not hashed
    "progress_deadline_secs": Field(SECONDS),  # a rollout not Ready by then fails; not hashed
}

#: TEI flags that carry a secret: refused in `extra_args`, with the field to set instead.
SECRET_FLAGS = {"--api-key": "api_key_file"}

#: Flags the reconciler passes that no field sets, with what to set instead.
LAUNCH_FLAGS = {"--hostname": "the manager's instance_host", "--json-output": ""}

#: Every flag the reconciler passes itself, with what to set instead; `extra_args` may not
#: repeat one.
MANAGED_FLAGS: dict[str, str] = {
    **{
        flag: name
        for name, field in FIELDS.items()
        if field.flag is not None
        for flag in (field.flag, *field.aliases)
    },
    **LAUNCH_FLAGS,
}


def _rules() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for name in InstanceSpec.__struct_fields__:
        rule = FIELDS[name].rule
        if rule is not None:
            rules[name] = rule
    return rules


#: The keys an `[instances.<name>]` or `[defaults]` table may hold (in the order of
#: `InstanceSpec`), with their rules.
RULES = _rules()
INSTANCE_KEYS: tuple[str, ...] = tuple(RULES)

#: The keys every instance must have, from its own table or `[defaults]`.
REQUIRED = tuple(
    f.name for f in msgspec.structs.fields(InstanceSpec) if f.required and f.name in RULES
)

#: The fields that hold a port: no two instances may name the same one.
PORTS = tuple(name for name, rule in RULES.items() if rule is PORT)

#: Fields the controller fills in when the desired spec leaves them out.
ASSIGNED = frozenset(name for name, field in FIELDS.items() if field.assigned)

#: Fields that hold a date-time (JSON carries them as text).
DATE_TIMES = frozenset(
    f.name for f in msgspec.structs.fields(InstanceSpec) if datetime in (f.type, *get_args(f.type))
)


def same_spec(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether an observed spec is the desired one, both as JSON data (what the API shows),
    the fields the controller filled in aside."""
    ignore = {k for k in ASSIGNED if desired.get(k) is None}
    return {k: v for k, v in observed.items() if k not in ignore} == {
        k: v for k, v in desired.items() if k not in ignore
    }
