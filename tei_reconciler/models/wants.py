"""Which models a desired state names, and which of them it wants on disk. Pure.

Every instance's `model_id` and every `[models."<id>"]` table is named; the registry lists
each, so a model appears (and goes) on every watch as the state file changes. Wanted on disk:
every instance's model (stopped instances' too: a stop frees the GPU, not the disk), at its
revision, and a declared model with `keep = true` even with no instance on it. A declared
model nothing uses is only listed (fetched when asked). Models the binary serves without the
cache (`hash/...`, the packaged MiniLM with the built-in engine) are never fetched. A local
directory is wanted as such (inspected, never fetched). Which weights a fetch takes is the
registry's to say (one binary serves every model).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec

from tei_reconciler.desired.spec import DesiredState


class Need(enum.StrEnum):
    """What the desired state needs of a model it names."""

    FETCH = "fetch"  # used by an instance or kept: on disk, and its instances wait for it
    LISTED = "listed"  # declared, no keep, no instance on it: listed, fetched only when asked
    SHIPPED = "shipped"  # the binary serves it without the cache: listed, never fetched


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """One model the desired state names (or a fetch asked through the API), and why."""

    model_id: str
    revision: str | None = None
    need: Need = Need.FETCH
    declared: bool = False
    keep: bool = False
    used_by: tuple[str, ...] = ()
    local: bool = False  # an absolute path: inspected, never fetched


def is_local(model_id: str) -> bool:
    return model_id.startswith("/")


def named_models(
    desired: DesiredState, *, served_without_cache: Callable[[str], bool]
) -> dict[str, Want]:
    """Every model `desired` names, by id. `served_without_cache(model_id)`: the binary has
    this model without the cache."""
    users: dict[str, list[str]] = {}
    revisions: dict[str, str | None] = {}
    for name in sorted(desired.instances):
        spec = desired.instances[name]
        users.setdefault(spec.model_id, []).append(name)
        revisions.setdefault(spec.model_id, spec.revision)
    named: dict[str, Want] = {}
    for model_id in sorted(set(users) | set(desired.models)):
        declared = desired.models.get(model_id)
        keep = declared is not None and declared.keep
        revision = revisions.get(model_id)
        if revision is None and declared is not None:
            revision = declared.revision
        if served_without_cache(model_id):
            need = Need.SHIPPED
        elif model_id in users or keep:
            need = Need.FETCH
        else:
            need = Need.LISTED
        named[model_id] = Want(
            model_id=model_id,
            revision=revision,
            need=need,
            declared=declared is not None,
            keep=keep,
            used_by=tuple(users.get(model_id, ())),
            local=is_local(model_id),
        )
    return named
