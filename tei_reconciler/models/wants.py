"""Which models a desired state wants on disk, and with which weights. Pure.

Every instance's `model_id` is wanted (stopped instances' too: a stop frees the GPU, not the
disk), at its revision; a `[models."<id>"]` table with `keep = true` is wanted even with no
instance on it. A local directory is wanted as such (inspected, never fetched). Models the
built-in engine serves without the cache (`hash/...`, the packaged MiniLM) are not wanted
when it is the binary.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.models.select import Flavour


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """One model the desired state wants, and why."""

    model_id: str
    revision: str | None = None
    flavours: frozenset[Flavour] = frozenset({Flavour.SAFETENSORS})
    declared: bool = False
    keep: bool = False
    used_by: tuple[str, ...] = ()
    local: bool = False  # an absolute path: inspected, never fetched


def is_local(model_id: str) -> bool:
    return model_id.startswith("/")


def wanted_models(
    desired: DesiredState, *, flavour: Flavour, served_without_cache: Callable[[str], bool]
) -> dict[str, Want]:
    """The models `desired` wants, by id. `flavour`: the weights the binary reads;
    `served_without_cache(model_id)`: the binary has this model without the cache."""
    users: dict[str, list[str]] = {}
    revisions: dict[str, str | None] = {}
    for name in sorted(desired.instances):
        spec = desired.instances[name]
        if served_without_cache(spec.model_id):
            continue
        users.setdefault(spec.model_id, []).append(name)
        revisions.setdefault(spec.model_id, spec.revision)
    ids = set(users) | {m for m, s in desired.models.items() if s.keep}
    wants: dict[str, Want] = {}
    for model_id in sorted(ids):
        declared = desired.models.get(model_id)
        revision = revisions.get(model_id) if model_id in users else None
        if revision is None and declared is not None:
            revision = declared.revision
        wants[model_id] = Want(
            model_id=model_id,
            revision=revision,
            flavours=frozenset({flavour}),
            declared=declared is not None,
            keep=declared.keep if declared is not None else False,
            used_by=tuple(users.get(model_id, ())),
            local=is_local(model_id),
        )
    return wants
