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
