"""What every handler works with: the state file, the status store, settings and two callbacks.

The API holds no state of its own. Reads parse the state file (cached by revision, so a poll of
`GET /instances` costs one file read and a hash, not a TOML parse); writes go through the state
file's locked read-modify-write on a worker thread, then tell the controller to look again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio
from starlette.requests import Request

from tei_reconciler._types import Clock
from tei_reconciler.api.schemas import PlannedAction
from tei_reconciler.desired.spec import DesiredState, InstanceSpec
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.errors import Problem, SpecError, StateFileError
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.routing import DataPlane
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.traffic import TrafficRing

T = TypeVar("T")

#: The controller's dry-run planner: what it would do to reach a desired state.
Preview = Callable[[DesiredState], Sequence[object]]


class ModelCommands(Protocol):
    """What the API may ask of the model registry (it never fetches or deletes itself)."""

    def fetch_now(self, model_id: str, revision: str | None = None) -> None: ...

    async def evict(self, model_id: str) -> bool: ...


@dataclass
class Snapshot:
    """The state file as last read: valid (`desired`) or not (`error`), and its revision."""

    revision: str
    desired: DesiredState | None
    error: SpecError | None


@dataclass
class ApiContext:
    statefile: StateFile
    store: StatusStore
    settings: Settings
    on_change: Callable[[], None]
    preview: Preview
    clock: Clock
    closing: anyio.Event | None = None  # set when the server starts shutting down
    traffic: TrafficRing = field(default_factory=TrafficRing)  # fed by the data plane
    data_plane: DataPlane | None = None  # what carries the gRPC traffic, when there is one
    models: ModelCommands | None = None  # the model registry (None: no model routes)
    _cache: Snapshot | None = field(default=None, repr=False)
    _parsing: anyio.Lock = field(default_factory=anyio.Lock, repr=False)

    async def snapshot(self) -> Snapshot:
        """The file as it is now; read and parsed on a worker thread, one parse at a time (a
        burst of requests after a change parses it once)."""
        try:
            data, revision = await anyio.to_thread.run_sync(self.statefile.read)
        except StateFileError as exc:  # a directory, too large, unreadable: like invalid
            problem = Problem(
                path=str(self.statefile.path),
                line=0,
                column=0,
                field="file",
                message=str(exc),
                code="unreadable",
            )
            return Snapshot(revision="", desired=None, error=SpecError([problem]))
        async with self._parsing:
            cached = self._cache
            if cached is not None and cached.revision == revision:
                return cached
            try:
                desired = await anyio.to_thread.run_sync(self.statefile.parse, data)
                snap = Snapshot(revision=revision, desired=desired, error=None)
            except SpecError as exc:
                snap = Snapshot(revision=revision, desired=None, error=exc)
            self._cache = snap
            return snap

    async def effective(self) -> DesiredState:
        """The desired state the controller acts on: the file when valid, else the last good
        one (what the store says it observed)."""
        snap = await self.snapshot()
        if snap.desired is not None:
            return snap.desired
        return self.last_good()

    def last_good(self) -> DesiredState:
        return DesiredState(
            instances={s.name: s.spec for s in self.store.all()},
            revision=self.store.observed_revision,
        )

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one state-file write on a worker thread, then mark the controller dirty."""

        def call() -> T:
            return fn(*args, **kwargs)

        result = await anyio.to_thread.run_sync(call)
        self.on_change()
        return result

    async def lookup(self, name: str) -> tuple[InstanceSpec | None, InstanceStatus | None]:
        """The desired spec (None when not in the file) and observed status of `name`."""
        desired = await self.effective()
        return desired.instances.get(name), self.store.get(name)

    def routed_by(self, name: str) -> str | None:
        """The data plane that sends new calls to instance `name` now, if any does."""
        plane = self.data_plane
        return plane.kind if plane is not None and plane.routes_to(name) else None

    def plan(self, desired: DesiredState) -> list[PlannedAction]:
        return [planned(a) for a in self.preview(desired)]


def ctx_of(request: Request) -> ApiContext:
    """The context every handler works with (one per app, set by `create_app`)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def planned(action: object) -> PlannedAction:
    """A planner's action as shown to users: a `PlannedAction` as is, or the controller's own
    tagged Structs (`Start(name, spec)`, `Stop(name, reason)`, `Forget(name)`) by duck typing,
    so the real planner plugs in without an adapter."""
    if isinstance(action, PlannedAction):
        return action
    instance = getattr(action, "instance", None) or getattr(action, "name", "")
    config = getattr(type(action), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    kind = getattr(action, "action", None) or (tag if isinstance(tag, str) else None)
    reason = getattr(action, "reason", None)
    if reason is None and getattr(action, "spec", None) is not None:
        reason = "desired running, no process"
    return PlannedAction(
        instance=str(instance),
        action=str(kind or type(action).__name__.lower()),
        reason="" if reason is None else str(reason),
    )
