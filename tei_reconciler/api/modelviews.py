"""A model as every route shows it: `GET /models`, `GET /models/{id}` and both watches.

The registry's status says what is on disk, what a fetch is doing, or why the model is not
fetched; it has one for every model the state file names, so each change reaches the watches.
Whether the model is declared, kept, and which instances use it is always read from the state
file as it is now (the registry learns of an edit only at the controller's next pass; until
then the model is shown as not observed). The check before start of each instance on the
model (refused, or warned that the weights may not fit) comes from the instances' own
statuses and events.
"""

from __future__ import annotations

import msgspec

from tei_reconciler.api.context import ApiContext
from tei_reconciler.api.schemas import ModelCheckOut, ModelOut
from tei_reconciler.api.views import model_out, ts
from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.planner.model_status import (
    INSUFFICIENT_GPU_MEMORY,
    UNSUPPORTED_MODEL,
    ModelState,
    ModelStatus,
)
from tei_reconciler.store import StatusStore


def users_of(desired: DesiredState, model_id: str) -> list[str]:
    return sorted(s.name for s in desired.instances.values() if s.model_id == model_id)


def model_ids(ctx: ApiContext, desired: DesiredState) -> list[str]:
    """Every model declared, used, or known to the registry, sorted."""
    ids = {s.model_id for s in ctx.store.models()} | set(desired.models)
    ids |= {s.model_id for s in desired.instances.values()}
    return sorted(ids)


def shown_in(ctx: ApiContext, desired: DesiredState, model_id: str) -> ModelOut | None:
    """`model_id` as shown against `desired`; None when nothing declares, uses or holds it."""
    declared = desired.models.get(model_id)
    users = users_of(desired, model_id)
    status = ctx.store.model(model_id)
    if status is None:
        if declared is None and not users:
            return None
        status = ModelStatus(
            model_id=model_id,
            state=ModelState.AVAILABLE,
            revision=declared.revision if declared is not None else None,
            reason="NotObserved",
            message="the registry has not looked at it yet",
        )
    overlay = msgspec.structs.replace(
        status,
        declared=declared is not None,
        keep=declared.keep if declared is not None else False,
        used_by=tuple(users),
    )
    return model_out(overlay, checks(ctx.store, model_id, users))


async def shown(ctx: ApiContext, model_id: str) -> ModelOut | None:
    return shown_in(ctx, await ctx.effective(), model_id)


class WatchedModels:
    """The models one watch has shown, and the state file revision it read them against.

    A body reads the state file as it is now, which may be ahead of what the controller has
    acted on. When the file changes again before the controller sees that revision (an edit
    undone within the file watcher's debounce), no registry change follows, so a watch that
    read a revision the controller has not acted on (`ahead`) reads the file again
    (`recheck`) and shows each model whose body changed since."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.sent: dict[str, ModelOut] = {}
        self._basis = ""  # revision of the valid file the bodies were read against

    async def desired(self) -> DesiredState:
        snap = await self.ctx.snapshot()
        if snap.desired is None:  # invalid: the last good state, which the controller acts on
            self._basis = ""
            return self.ctx.last_good()
        self._basis = snap.revision
        return snap.desired

    @property
    def ahead(self) -> bool:
        return self._basis not in ("", self.ctx.store.observed_revision)

    def show(self, desired: DesiredState, model_id: str) -> ModelOut | None:
        """`model_id` as shown against `desired` (None: gone), noted as sent."""
        body = shown_in(self.ctx, desired, model_id)
        if body is None:
            self.sent.pop(model_id, None)
        else:
            self.sent[model_id] = body
        return body

    async def recheck(self) -> list[tuple[str, ModelOut | None]]:
        """(model id, body or None: gone) of each model shown otherwise than last sent."""
        desired = await self.desired()
        changed: list[tuple[str, ModelOut | None]] = []
        for model_id in sorted(set(self.sent) | set(model_ids(self.ctx, desired))):
            before = self.sent.get(model_id)
            body = self.show(desired, model_id)
            if body != before:
                changed.append((model_id, body))
        return changed


def checks(store: StatusStore, model_id: str, users: list[str]) -> list[ModelCheckOut]:
    """The check before start of each instance on `model_id`: a refusal stands while the
    instance is Failed for it; a warning is the last one given at a start of the instance."""
    found: list[ModelCheckOut] = []
    for name in users:
        status = store.get(name)
        if status is None or status.spec.model_id != model_id:
            continue  # not observed on this model (yet)
        if status.reason == UNSUPPORTED_MODEL:
            found.append(
                ModelCheckOut(
                    instance=name, verdict="refused", reason=status.reason, message=status.message
                )
            )
        warned = [e for e in store.events(name) if e.reason == INSUFFICIENT_GPU_MEMORY]
        if warned:
            last = max(warned, key=lambda e: e.last_time)
            found.append(
                ModelCheckOut(
                    instance=name,
                    verdict="warning",
                    reason=last.reason,
                    message=last.message,
                    at=ts(last.last_time),
                )
            )
    return found
