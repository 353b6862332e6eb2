"""The rule of each kind of instance value, and its REST type.

A `Rule` checks one raw value (as TOML or JSON decoded it) and converts it, or raises `Invalid`
with a message that says what the rule is. It also names the type a REST request body declares
for the same value, so the published schema describes what the state file accepts (the state
file's rule stays the final word: the API writes through it). The field table (`fields.py`)
gives each instance field one of these rules. Pure: no I/O.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeGuard

import msgspec

from tei_reconciler.desired.spec import MANAGED_ENV, GpuSpec
from tei_reconciler.desired.unsafe_env import unsafe_env

_HF_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
#: `model_id` as a pattern for the REST schema (the rule also refuses "." and ".." segments
#: of an id, which a pattern cannot say simply).
MODEL_ID_PATTERN = rf"^(/[^\x00]*|{_HF_ID.pattern})$"
MIN_PORT, MAX_PORT = 1024, 65535
_INT64_MAX = 2**63 - 1  # TOML integers are 64-bit; Python's parser accepts more

#: REST types: 0 is tei-manager's "pick a port for me", as is leaving the field out.
Port = Annotated[int, msgspec.Meta(ge=0, le=65535, description="0 or omitted: auto-assigned")]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Invalid(Exception):
    """A value that breaks its field's rule; the message says what the rule is."""


@dataclass(frozen=True)
class Rule:
    """How one kind of value is checked (`check` converts or raises `Invalid`), and the type a
    REST body declares for it."""

    check: Callable[[object], Any]
    rest: object


def show(value: object) -> str:
    """A value as a problem message quotes it: TOML spelling, at most 60 characters."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def no_nul(value: str, what: str = "") -> str:
    """A NUL cannot pass through argv or the environment: exec would refuse the child."""
    if "\0" in value:
        raise Invalid(f"{what}may not contain a NUL character, got {show(value)}")
    return value


def _positive_int(value: object) -> int:
    if not is_int(value) or not 1 <= value <= _INT64_MAX:
        raise Invalid(f"must be a positive integer, got {show(value)}")
    return value


def _positive_number(value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise Invalid(f"must be a positive number of seconds, got {show(value)}")
    return float(value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, got {show(value)}")
    return no_nul(value)


def choice(enum_type: type[enum.StrEnum]) -> Rule:
    """One of the enum's values; the REST type is the enum itself."""

    def convert(value: object) -> object:
        if isinstance(value, str):
            try:
                return enum_type(value)
            except ValueError:
                pass
        allowed = ", ".join(m.value for m in enum_type)
        raise Invalid(f"must be one of {allowed}, got {show(value)}")

    return Rule(convert, enum_type)


def _model_id(value: object) -> str:
    if isinstance(value, str) and (
        (value.startswith("/") and "\0" not in value)
        or (_HF_ID.fullmatch(value) is not None and not {".", ".."} & set(value.split("/")))
    ):
        return value
    raise Invalid(
        f"must be a Hugging Face model id ('org/name') or an absolute path, got {show(value)}"
    )


def _port(value: object) -> int:
    if not is_int(value) or not MIN_PORT <= value <= MAX_PORT:
        raise Invalid(f"must be between {MIN_PORT} and {MAX_PORT}, got {show(value)}")
    return value


def _gpu(value: object) -> GpuSpec:
    if value in ("all", "none"):
        return "all" if value == "all" else "none"
    if is_int(value) and value >= 0:
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(is_int(v) and v >= 0 for v in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise Invalid(
        'must be a GPU index (an integer >= 0), a non-empty list of distinct indexes, "all" or '
        f'"none", got {show(value)}'
    )


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {show(value)}")
    return value


def _datetime(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise Invalid(f"must be a TOML date-time such as 2024-05-01T12:00:00Z, got {show(value)}")
    return value


def strings(each: Callable[[str], object] = no_nul) -> Rule:
    """A list of strings, each checked by `each` (by default: no NUL) in order."""

    def check(value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"must be a list of strings, got {show(value)}")
        for item in value:
            each(item)
        return tuple(value)

    return Rule(check, tuple[str, ...])


#: The environment name TEI reads its API key from: set from `api_key_file`, never from `env`
#: (a key in the state file would show in every status and in every copy of the file).
API_KEY_ENV = "API_KEY"


def _absolute_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise Invalid(f"must be an absolute path, got {show(value)}")
    return no_nul(value)


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of strings, got {show(value)}")
    unsafe: list[str] = []  # every refused variable at once: the writer fixes them in one go
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise Invalid(f"{show(key)} is not a valid environment variable name")
        if key in MANAGED_ENV:
            instead = "set gpu instead" if key == "CUDA_VISIBLE_DEVICES" else "the reconciler's"
            raise Invalid(f"may not set {key} ({instead})")
        if key == API_KEY_ENV:
            raise Invalid(f"may not set {key}: put the key in a file and set api_key_file")
        reason = unsafe_env(key)
        if reason is not None:
            unsafe.append(f"may not set {key}: {reason}")
        if not isinstance(item, str):
            raise Invalid(f"{key} must be a string, got {show(item)}")
        no_nul(item, f"{key} ")
    if unsafe:
        raise Invalid("; env ".join(unsafe))
    return dict(value)


MODEL_ID = Rule(
    _model_id, Annotated[str, msgspec.Meta(extra_json_schema={"pattern": MODEL_ID_PATTERN})]
)
TEXT = Rule(_text, str)
GPU = Rule(_gpu, GpuSpec)
PORT = Rule(_port, Port)
POSITIVE_INT = Rule(_positive_int, PositiveInt)
SECONDS = Rule(_positive_number, PositiveFloat)
BOOL = Rule(_bool, bool)
DATE_TIME = Rule(_datetime, datetime)
ENV = Rule(_env, dict[str, str])
ABSOLUTE_PATH = Rule(_absolute_path, str)
