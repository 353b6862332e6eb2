"""The planner's actions: what the controller is told to do to one instance.

Pure records (the actuator carries them out). One action at a time per instance: the planner
leaves an instance alone while its action is in flight (`ObservedInstance.busy`).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from tei_reconciler.desired.spec import InstanceSpec

StopReason = Literal[
    "Removed", "StoppedByUser", "SpecChanged", "StartupTimeout", "LivenessFailed", "Unauthenticated"
]

#: Why a rollout's new process is stopped before it took traffic. The first two fail the
#: rollout (retried with backoff); the others make the attempt obsolete.
AbortReason = Literal[
    "RolloutFailed", "ProgressDeadlineExceeded", "Superseded", "StoppedByUser", "Removed"
]
ROLLOUT_FAILED: frozenset[str] = frozenset({"RolloutFailed", "ProgressDeadlineExceeded"})

#: Why the old process of a rollout is stopped once traffic switched away from it.
RetireReason = Literal["Replaced"]


class Start(msgspec.Struct, frozen=True, kw_only=True, tag="start"):
    """Spawn a process for `spec` (allocating ports, checking GPU and binary first)."""

    name: str
    spec: InstanceSpec


class Stop(msgspec.Struct, frozen=True, kw_only=True, tag="stop"):
    """Terminate the instance's current process group (after draining its calls, unless it is
    being replaced for failing its probes). `crash`: count it as a failure (backoff);
    `forget`: drop the instance's status once the process is gone."""

    name: str
    reason: StopReason
    crash: bool = False
    forget: bool = False


class Forget(msgspec.Struct, frozen=True, kw_only=True, tag="forget"):
    """Drop an instance that is neither desired nor running."""

    name: str


class StartNext(msgspec.Struct, frozen=True, kw_only=True, tag="start-next"):
    """Surge: spawn `spec`'s process beside the current one (the same GPUs, fresh ports); the
    current process keeps all the traffic until the new one is Ready."""

    name: str
    spec: InstanceSpec

    @property
    def reason(self) -> str:
        return "spec changed: a new process starts beside the serving one"


class Promote(msgspec.Struct, frozen=True, kw_only=True, tag="switch"):
    """The new process is Ready (or the old one is gone): routing switches to it in one step,
    then the old process drains (its calls in flight finish, up to `stop_grace_secs`) and is
    stopped."""

    name: str

    @property
    def reason(self) -> str:
        return "the new process is Ready: traffic switches to it, the old one drains"


class AbortNext(msgspec.Struct, frozen=True, kw_only=True, tag="abort-next"):
    """Stop a rollout's new process, which never took traffic; the current one keeps serving.
    `message` says why in words (for a failed rollout)."""

    name: str
    reason: AbortReason
    message: str = ""

    @property
    def failed(self) -> bool:
        """Whether the rollout failed (as opposed to being made obsolete)."""
        return self.reason in ROLLOUT_FAILED


Action = Start | Stop | Forget | StartNext | Promote | AbortNext
