"""Render a kustomization: with `kubectl kustomize` where kubectl is installed, else with a
small renderer of the subset `manifests/` uses, so the overlays are checked everywhere.

The subset: `resources` (files and directories), `namespace`, `labels` (with
`includeSelectors`), `images`, `configMapGenerator` (files; `behavior: replace`;
`disableNameSuffixHash`) with the content-hash name suffix and the references to it, and
`patches` as strategic merges (lists of containers, volumes and the like merged by their key,
`$patch: delete`). Anything else in a kustomization is an error, never silently ignored, and
`tests/deploy` compares both renderers wherever kubectl exists.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Obj = dict[str, Any]

_SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "patches",
}
#: Strategic-merge keys of the lists our patches touch (Kubernetes' `patchMergeKey`s).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "ports": "containerPort",
}
_CLUSTER_SCOPED = {"Namespace"}


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(directory: Path) -> list[Obj]:
    """The objects `directory`'s kustomization builds: by kubectl when present."""
    binary = kubectl()
    if binary is None:
        return render_in_python(directory)
    done = subprocess.run(
        [binary, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def render_in_python(directory: Path) -> list[Obj]:
    """The objects of `directory`'s kustomization, rendered by this module."""
    objects = _build(directory)
    _hash_names(objects)
    for obj in objects:
        obj.pop("_generated", None)
    return objects


def _docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _build(directory: Path) -> list[Obj]:
    (kustomization,) = _docs(directory / "kustomization.yaml")
    unknown = set(kustomization) - _SUPPORTED
    if unknown:
        raise AssertionError(f"{directory}: the Python renderer does not know {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += _build(path) if path.is_dir() else _docs(path)
    for generator in kustomization.get("configMapGenerator", []):
        _generate(directory, generator, objects)
    for patch in kustomization.get("patches", []):
        for doc in _docs(directory / patch["path"]):
            target = _find(objects, doc["kind"], doc["metadata"]["name"])
            merged = _merge(target, doc)
            target.clear()
            target.update(merged)
    for label in kustomization.get("labels", []):
        _label(objects, label["pairs"], selectors=label.get("includeSelectors", False))
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    return objects


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} to patch")


def _generate(directory: Path, generator: Obj, objects: list[Obj]) -> None:
    name = generator["name"]
    data = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=")
        data[key or Path(source).name] = (directory / source).read_text()
    hashed = not generator.get("options", {}).get("disableNameSuffixHash", False)
    made: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data,
        "_generated": hashed,
    }
    behavior = generator.get("behavior", "create")
    if behavior == "create":
        objects.append(made)
        return
    if behavior != "replace":
        raise AssertionError(f"configMapGenerator behavior {behavior!r} is not supported")
    existing = _find(objects, "ConfigMap", name)
    existing["data"] = data
    existing["_generated"] = hashed


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge of `patch` into `base` (a copy)."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if key in _MERGE_KEYS and isinstance(value, list):
            merged[key] = _merge_list(merged.get(key, []), value, _MERGE_KEYS[key])
        elif key in merged:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_list(base: list[Obj], patch: list[Obj], key: str) -> list[Obj]:
    merged = copy.deepcopy(base)
    for item in patch:
        index = next((i for i, b in enumerate(merged) if b.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = _merge(merged[index], item)
    return merged


def _label(objects: list[Obj], pairs: dict[str, str], *, selectors: bool) -> None:
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if not selectors:
            continue
        spec = obj.get("spec", {})
        if obj["kind"] == "Deployment":
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
            template = spec.setdefault("template", {}).setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)
        elif obj["kind"] == "Service":
            spec.setdefault("selector", {}).update(pairs)


def _pod_containers(obj: Obj) -> list[Obj]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


def _set_image(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        for container in _pod_containers(obj):
            name, _, tag = container["image"].partition(":")
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _hash_names(objects: list[Obj]) -> None:
    """Append a content hash to generated ConfigMaps' names, and follow it in the volumes."""
    renamed: dict[str, str] = {}
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj.get("_generated"):
            content = json.dumps(obj["data"], sort_keys=True).encode()
            suffix = hashlib.sha256(content).hexdigest()[:10]
            old = obj["metadata"]["name"]
            renamed[old] = obj["metadata"]["name"] = f"{old}-{suffix}"
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for volume in pod.get("volumes", []):
            config_map = volume.get("configMap")
            if config_map is not None and config_map["name"] in renamed:
                config_map["name"] = renamed[config_map["name"]]
