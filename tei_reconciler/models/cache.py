"""The Hugging Face cache on disk: where a model's snapshot is, whether it is complete, how big
it is, and removing it. The layout is huggingface_hub's (`models--org--name/refs/<branch>`,
`snapshots/<commit>/<file>` linking into `blobs/`), shared with TEI and the built-in engine.

"Complete" means servable by the binary that will serve it, checked the way that binary
reads the directory (`required_files`), so a cache filled by someone else (another host, an
older TEI, `huggingface-cli download`) counts, and no network is needed to tell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tei_reconciler.engine.layout import ONNX_FILES
from tei_reconciler.models.inspect import disk_usage
from tei_reconciler.models.select import Flavour

_COMMIT = re.compile(r"[0-9a-f]{40}")
_PREFIX = "models--"


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One model folder found in the cache."""

    model_id: str
    path: Path  # the `models--org--name` folder
    refs: dict[str, str]  # branch or tag -> commit


def folder_name(model_id: str) -> str:
    return _PREFIX + model_id.replace("/", "--")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def required_files(snapshot: Path, flavours: Collection[Flavour]) -> list[str]:
    """What `snapshot` lacks to be served with `flavours` (empty when complete)."""
    missing = [f for f in ("config.json", "tokenizer.json") if not (snapshot / f).is_file()]
    if Flavour.ONNX in flavours and not any((snapshot / f).is_file() for f in ONNX_FILES):
        missing.append("onnx/model.onnx")
    if Flavour.SAFETENSORS in flavours:
        missing += _safetensors_missing(snapshot)
    return missing


def _safetensors_missing(snapshot: Path) -> list[str]:
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (snapshot / single).is_file():
            return []
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        path = snapshot / index
        if path.is_file():
            try:
                weight_map = json.loads(path.read_text()).get("weight_map", {})
            except (OSError, ValueError, AttributeError):
                return [index]
            shards = sorted({str(v) for v in weight_map.values()})
            return [s for s in shards if not (snapshot / s).is_file()]
    return ["model.safetensors"]


class HubCache:
    """Reads and evicts models in one cache directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, model_id: str) -> Path:
        return self.root / folder_name(model_id)

    def commit(self, model_id: str, revision: str | None) -> str | None:
        """The commit `revision` (default main) points to in the cache, if known."""
        wanted = revision or "main"
        if _COMMIT.fullmatch(wanted):
            return wanted
        return _read(self.folder(model_id) / "refs" / wanted)

    def snapshot(self, model_id: str, revision: str | None) -> Path | None:
        commit = self.commit(model_id, revision)
        if commit is None:
            return None
        path = self.folder(model_id) / "snapshots" / commit
        return path if path.is_dir() else None

    def complete(
        self, model_id: str, revision: str | None, flavours: Collection[Flavour]
    ) -> Path | None:
        """The snapshot when it holds everything `flavours` need, else None."""
        snapshot = self.snapshot(model_id, revision)
        if snapshot is None or required_files(snapshot, flavours):
            return None
        return snapshot

    def set_ref(self, model_id: str, revision: str | None, commit: str) -> None:
        """Point `refs/<revision>` at `commit` (atomically; commits need no ref)."""
        wanted = revision or "main"
        if _COMMIT.fullmatch(wanted):
            return
        refs = self.folder(model_id) / "refs"
        target = refs / wanted
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        tmp.replace(target)

    def size(self, model_id: str) -> int | None:
        folder = self.folder(model_id)
        return disk_usage(folder) if folder.is_dir() else None

    def scan(self) -> list[CachedModel]:
        """Every model folder in the cache, by id."""
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        found: list[CachedModel] = []
        for entry in entries:
            if not entry.name.startswith(_PREFIX) or not entry.is_dir():
                continue
            model_id = entry.name.removeprefix(_PREFIX).replace("--", "/", 1)
            refs: dict[str, str] = {}
            refs_dir = entry / "refs"
            if refs_dir.is_dir():
                for ref in refs_dir.rglob("*"):
                    commit = _read(ref) if ref.is_file() else None
                    if commit is not None:
                        refs[ref.relative_to(refs_dir).as_posix()] = commit
            found.append(CachedModel(model_id=model_id, path=entry, refs=refs))
        return found

    def evict(self, model_id: str) -> bool:
        """Remove the model's whole folder (and its download locks); False when absent."""
        folder = self.folder(model_id)
        shutil.rmtree(self.root / ".locks" / folder.name, ignore_errors=True)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True
