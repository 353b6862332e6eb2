"""The project's exception tree.

    TeiReconcilerError
    ├── SpecError               a state or config file is invalid (carries every problem found)
    ├── AuthConfigError         a CA, certificate, key or tokens file of [auth] cannot be loaded
    ├── DataPlaneError          the data plane asked for cannot run (no Envoy binary, ...)
    ├── StateFileError          the state file cannot be read or written
    │   ├── StateFileTooLarge   larger than max_state_bytes: never read, let alone parsed
    │   ├── StateReadOnly       the file is GitOps-owned (symlink, read-only mount): never written
    │   ├── RevisionConflict    a write expected a revision the file no longer has
    │   ├── InstanceExists      an add named an instance the file already has
    │   └── InstanceNotFound    an edit named an instance the file does not have
    └── ActionError             acting on the world failed
        ├── TemporaryError      worth retrying soon (carries `delay`)
        └── PermanentError      no retry fixes it without a spec change (binary missing, ...)

Callers catch the narrowest class they can handle; the controller's one boundary turns
`ActionError`s into outcomes (phase, reason, requeue) and logs them once.
"""

from __future__ import annotations

import msgspec


class TeiReconcilerError(Exception):
    """Base of every error the project raises on purpose."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One validation problem, located as precisely as the input allows."""

    path: str  # file the problem is in ("" for flags/env)
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    field: str  # dotted field path, e.g. "instances.bge.port"
    message: str
    code: str = "invalid"  # machine-readable kind: "invalid", "unknown_key", "port_conflict", ...

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.field}: {self.message}"


class SpecError(TeiReconcilerError):
    """Invalid desired state or settings. `problems` lists all of them, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class AuthConfigError(TeiReconcilerError):
    """A file `[auth]` names (CA, server certificate or key, tokens) cannot be loaded."""


class DataPlaneError(TeiReconcilerError):
    """The data plane the settings ask for cannot run here (`data_plane = "envoy"` without an
    Envoy binary, an instance host Envoy cannot address)."""


class StateFileError(TeiReconcilerError):
    """The state file cannot be read or written."""


class StateFileTooLarge(StateFileError):
    """The state file is larger than `max_state_bytes`; it is not read (a huge file would stall
    the parser and fill memory)."""


class StateReadOnly(StateFileError):
    """The state file is owned by GitOps (a symlink or a read-only mount); it is never written."""


class RevisionConflict(StateFileError):
    """A write was based on a revision the file no longer has."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"state file revision is {actual}, not the expected {expected}")


class InstanceExists(StateFileError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"instance {name!r} already exists")


class InstanceNotFound(StateFileError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"instance {name!r} not found")


class ActionError(TeiReconcilerError):
    """Acting on the world (spawning, stopping, probing) failed."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason  # CamelCase, shown as the status reason (e.g. "PortInUse")
        self.message = message
        super().__init__(f"{reason}: {message}")


class TemporaryError(ActionError):
    """Retry after `delay` seconds."""

    def __init__(self, reason: str, message: str, delay: float) -> None:
        super().__init__(reason, message)
        self.delay = delay


class PermanentError(ActionError):
    """No retry helps until something outside changes (retried slowly, never in a hot loop)."""
