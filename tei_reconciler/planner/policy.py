"""The manager's settings that decide an instance's lifecycle, and an instance's own overrides.

Each field is named as the manager setting it comes from (`Policy.of(settings)`); the probe
fields are also instance fields, and an instance that sets one overrides the manager's value
(`for_instance`). That rule is written here once, for the planner and the probes alike.
"""

from __future__ import annotations

import msgspec

from tei_reconciler.desired.spec import InstanceSpec


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    startup_timeout_secs: float  # a process not healthy by then is restarted
    failure_threshold: int  # failed liveness probes in a row that end Ready, then the process
    health_interval_secs: float
    health_timeout_secs: float
    max_instances: int  # live processes at most; further starts wait

    @classmethod
    def of(cls, settings: object) -> Policy:
        """The policy of a manager's settings (a `Settings`: same field names)."""
        return cls(**{name: getattr(settings, name) for name in cls.__struct_fields__})

    def for_instance(self, spec: InstanceSpec | None) -> Policy:
        """This policy with the fields `spec` sets itself in place of the manager's."""
        if spec is None:
            return self
        own = {name: value for name in _OVERRIDABLE if (value := getattr(spec, name)) is not None}
        return msgspec.structs.replace(self, **own) if own else self


#: The policy fields an instance may set for itself.
_OVERRIDABLE = tuple(
    name for name in Policy.__struct_fields__ if name in InstanceSpec.__struct_fields__
)
