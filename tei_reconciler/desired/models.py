"""Declared models: the optional `[models."org/name"]` tables of the state file. Pure.

A table declares a model and carries what belongs to the model rather than to one instance:
`revision` (the branch, tag or commit to fetch; instances on the model that set no `revision`
of their own use it) and `keep` (keep the model on disk, fetched ahead of time, even while no
instance uses it). Every instance's `model_id` is wanted without a table.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from tei_reconciler.desired.check import Issue, accepts, suggest
from tei_reconciler.desired.spec import InstanceSpec, ModelSpec
from tei_reconciler.desired.tomlpositions import KeyPath

MODEL_KEYS = ("revision", "keep")


def _value_problem(key: str, value: object) -> str | None:
    if key == "revision":
        return (
            None
            if accepts("revision", value)
            else f"revision must be a non-empty string, got {value!r}"
        )
    if key == "keep":
        return None if isinstance(value, bool) else f"keep must be true or false, got {value!r}"
    return None


def check_models(raw: object, issues: list[Issue]) -> dict[str, ModelSpec]:
    """Validate the `models` top-level table; problems go to `issues`."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        issues.append(Issue(("models",), 'models must be a table of [models."org/name"]'))
        return {}
    specs: dict[str, ModelSpec] = {}
    for model_id, table in raw.items():
        where: KeyPath = ("models", model_id)
        if model_id.startswith("hash/") or not accepts("model_id", model_id):
            issues.append(
                Issue(
                    where,
                    f"model {model_id!r} must be a Hugging Face model id ('org/name') or an "
                    "absolute path",
                )
            )
            continue
        if not isinstance(table, Mapping):
            issues.append(Issue(where, f'models."{model_id}" must be a table'))
            continue
        values: dict[str, object] = {}
        for key, value in table.items():
            if key not in MODEL_KEYS:
                hint = suggest(key, MODEL_KEYS) or (
                    " (a [models] table holds revision and keep; the rest is per instance)"
                )
                issues.append(Issue((*where, key), f"unknown key {key!r}{hint}", "unknown_key"))
                continue
            problem = _value_problem(key, value)
            if problem is not None:
                issues.append(Issue((*where, key), problem))
                continue
            values[key] = value
        specs[model_id] = msgspec.convert({"model_id": model_id, **values}, ModelSpec)
    return specs


def with_model_revisions(
    instances: Mapping[str, InstanceSpec], models: Mapping[str, ModelSpec]
) -> dict[str, InstanceSpec]:
    """Instances with no `revision` of their own take their declared model's."""
    out: dict[str, InstanceSpec] = {}
    for name, spec in instances.items():
        declared = models.get(spec.model_id)
        if spec.revision is None and declared is not None and declared.revision is not None:
            out[name] = msgspec.structs.replace(spec, revision=declared.revision)
        else:
            out[name] = spec
    return out
