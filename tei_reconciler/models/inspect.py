"""What a model is, read from its files without loading a single weight.

`config.json` gives the architecture, sizes and positions; safetensors headers (an 8-byte
length and a JSON table of every tensor's dtype and shape) give the exact parameter count and
dtype. Where there are no safetensors (an ONNX or `pytorch_model.bin` repo) the count is
estimated from the config, as tei-manager's metadata module did, and marked as estimated.
`facts_from` is the pure part; `read_facts` does the file reads.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tei_reconciler.planner.model_status import ModelFacts

#: Weight files, in the order TEI looks for them; ONNX exports count for the built-in engine.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors refuses larger headers too
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3",
    "F8_E5M2": "float8_e5m2",
}


def _int(config: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def estimate_parameters(config: Mapping[str, Any]) -> int | None:
    """A transformer encoder's parameter count from its config (embeddings + layers)."""
    hidden = _int(config, "hidden_size", "d_model", "n_embd")
    layers = _int(config, "num_hidden_layers", "n_layer", "num_layers")
    if hidden is None or layers is None:
        return None
    vocab = _int(config, "vocab_size") or 0
    positions = _int(config, "max_position_embeddings", "n_positions") or 0
    inner = _int(config, "intermediate_size", "n_inner") or 4 * hidden
    per_layer = 4 * hidden * hidden + 2 * hidden * inner + 9 * hidden + inner
    return (vocab + positions + 2) * hidden + layers * per_layer


def _tensor_stats(headers: Iterable[Mapping[str, Any]]) -> tuple[int, str | None] | None:
    total = 0
    by_dtype: Counter[str] = Counter()
    seen = False
    for header in headers:
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, Mapping):
                continue
            seen = True
            count = 1
            for dim in entry.get("shape") or []:
                count *= int(dim)
            total += count
            by_dtype[str(entry.get("dtype", ""))] += count
    if not seen:
        return None
    top = by_dtype.most_common(1)[0][0] if by_dtype else ""
    return total, _SAFETENSORS_DTYPES.get(top, top.lower() or None)


def facts_from(
    config: Mapping[str, Any],
    headers: Sequence[Mapping[str, Any]] = (),
    *,
    weights_bytes: int | None = None,
    size_bytes: int | None = None,
) -> ModelFacts:
    """The facts of a model from its decoded `config.json` and safetensors headers."""
    architectures = config.get("architectures")
    architecture = (
        str(architectures[0]) if isinstance(architectures, list) and architectures else None
    )
    stats = _tensor_stats(headers)
    if stats is not None:
        parameters: int | None = stats[0]
        dtype = stats[1]
        estimated = False
    else:
        parameters = estimate_parameters(config)
        raw = config.get("torch_dtype", config.get("dtype"))
        dtype = raw if isinstance(raw, str) else None
        estimated = parameters is not None
    model_type = config.get("model_type")
    return ModelFacts(
        model_type=model_type if isinstance(model_type, str) else None,
        architecture=architecture,
        hidden_size=_int(config, "hidden_size", "d_model", "n_embd"),
        max_position_embeddings=_int(config, "max_position_embeddings", "n_positions"),
        vocab_size=_int(config, "vocab_size"),
        num_hidden_layers=_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        num_attention_heads=_int(config, "num_attention_heads", "n_head"),
        parameters=parameters,
        parameters_estimated=estimated,
        dtype=dtype,
        weights_bytes=weights_bytes,
        size_bytes=size_bytes,
    )


class InspectError(Exception):
    """A model file is missing or unreadable; the message names it."""


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (the weights after it are never read)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                raise InspectError(f"{path}: too short for a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                raise InspectError(f"{path}: safetensors header of {length} bytes is too large")
            raw = handle.read(length)
    except OSError as exc:
        raise InspectError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InspectError(f"{path}: the safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise InspectError(f"{path}: the safetensors header is not a JSON object")
    return header


def disk_usage(root: Path) -> int:
    """Bytes under `root`, each real file once (snapshots link into shared blobs)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in root.rglob("*"):
        try:
            stat = path.stat()
        except OSError:
            continue
        if not path.is_file() or (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        total += stat.st_size
    return total


def read_facts(root: Path) -> ModelFacts:
    """The facts of the model directory `root` (a snapshot or a local path)."""
    config_path = root / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InspectError(f"{config_path}: cannot be read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InspectError(f"{config_path}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InspectError(f"{config_path}: expected a JSON object")
    weights = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    headers = [safetensors_header(p) for p in weights if p.suffix == ".safetensors"]
    return facts_from(
        config,
        headers,
        weights_bytes=sum(p.stat().st_size for p in weights) or None,
        size_bytes=disk_usage(root),
    )
