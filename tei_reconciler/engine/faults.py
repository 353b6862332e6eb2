"""Test-only fault injection, so the reconciler's tests can prove restarts, probes and backoff.

Off unless the environment variable `TEI_ENGINE_FAULTS` is set to comma-separated `key=value`
pairs, for example `ready_delay=2,exit_after_requests=3,health=fail`:

- `ready_delay=SECS`: wait this long after loading, before the port opens.
- `start_error=TEXT`: fail the start with this error once loaded, before the port opens
  (exit 1, as TEI does when a model cannot load: e.g. `start_error=CUDA out of memory`).
- `exit_after_requests=N`: exit (with `exit_code`) once N inference requests were answered.
- `exit_after_secs=SECS`: exit (with `exit_code`) this long after becoming ready.
- `exit_code=N`: the status for the two exits above (default 1).
- `health=fail`: gRPC health reports NOT_SERVING for every service, HTTP `/health` gives 503.
- `health=hang`: gRPC health Check and HTTP `/health` never answer.
- `slow_ms=MS`: every inference request takes at least this long.
- `ignore_sigterm=1`: SIGTERM is ignored (only SIGKILL stops the engine).
- `hold_until=PATH`: every inference request, once computed, waits until PATH exists before it
  answers: a request stays in flight exactly until the test releases it.
- `signal_file=PATH`: each SIGTERM or SIGINT the engine receives appends its name to PATH
  first (also when it is ignored), so a test knows the signal arrived.

An unknown key or a malformed value is a start error, so a typo never silently tests nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tei_reconciler.engine.types import StartupError

ENV = "TEI_ENGINE_FAULTS"


@dataclass(frozen=True, slots=True)
class Faults:
    ready_delay: float = 0.0
    start_error: str | None = None
    exit_after_requests: int | None = None
    exit_after_secs: float | None = None
    exit_code: int = 1
    health: str | None = None
    slow_ms: int = 0
    ignore_sigterm: bool = False
    hold_until: str | None = None
    signal_file: str | None = None


def parse_faults(environ: Mapping[str, str] | None = None) -> Faults:
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise StartupError(f"{ENV}: `{item}` is not key=value")
        values[key.strip()] = value.strip()
    try:
        faults = Faults(
            ready_delay=float(values.pop("ready_delay", 0)),
            start_error=values.pop("start_error", None) or None,
            exit_after_requests=_opt_int(values.pop("exit_after_requests", None)),
            exit_after_secs=_opt_float(values.pop("exit_after_secs", None)),
            exit_code=int(values.pop("exit_code", 1)),
            health=values.pop("health", None),
            slow_ms=int(values.pop("slow_ms", 0)),
            ignore_sigterm=values.pop("ignore_sigterm", "0") not in {"0", "false", ""},
            hold_until=values.pop("hold_until", None) or None,
            signal_file=values.pop("signal_file", None) or None,
        )
    except ValueError as exc:
        raise StartupError(f"{ENV}: {exc}") from exc
    if values:
        raise StartupError(f"{ENV}: unknown fault(s) {', '.join(sorted(values))}")
    if faults.health not in {None, "fail", "hang"}:
        raise StartupError(f"{ENV}: health must be fail or hang, not {faults.health}")
    return faults


def _opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: str | None) -> float | None:
    return None if value is None else float(value)
