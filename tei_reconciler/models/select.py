"""Which files of a Hub repo to fetch. Pure: the repo's file list in, a subset out.

A repo holds many exports (PyTorch, safetensors, ONNX variants, OpenVINO, TF, Flax) of which
a server needs one. TEI reads `config.json`, the tokenizer, the sentence-transformers configs
(pooling, `max_seq_length`, prompts, Dense layers) and one set of weights: `model.safetensors`,
else its shards, else `pytorch_model.bin`. The built-in engine reads the same configs and the
ONNX export (`onnx/model.onnx`, else `model.onnx`, with external data beside it). `Flavour`
says which weights the binary that will serve the model reads.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable

from tei_reconciler.engine.layout import ONNX_FILES, ST_CONFIG_NAMES


class Flavour(enum.StrEnum):
    """Which weights a server reads."""

    SAFETENSORS = "safetensors"  # TEI: safetensors, else PyTorch .bin
    ONNX = "onnx"  # the built-in engine (and TEI's ONNX backend)


#: Small files every server may read: configs and tokenizers.
METADATA_FILES = frozenset(
    {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "sentencepiece.bpe.model",
        "spiece.model",
        "tokenizer.model",
        "modules.json",
        "config_sentence_transformers.json",
        *ST_CONFIG_NAMES,
    }
)
_POOLING = re.compile(r"\d+_Pooling[^/]*/config\.json")
_DENSE = re.compile(r"\d+_Dense[^/]*/[^/]+")
_SAFETENSORS_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")
_BIN_SHARD = re.compile(r"pytorch_model-\d+-of-\d+\.bin")
_NO_ONNX = "it has no ONNX export (onnx/model.onnx or model.onnx), which the built-in engine needs"


def _weights(paths: Collection[str], flavour: Flavour) -> list[str]:
    if flavour is Flavour.ONNX:
        for name in ONNX_FILES:
            if name in paths:
                data = f"{name}_data"
                return [name, data] if data in paths else [name]
        return []
    if "model.safetensors" in paths:
        return ["model.safetensors"]
    if "model.safetensors.index.json" in paths:
        shards = sorted(p for p in paths if _SAFETENSORS_SHARD.fullmatch(p))
        return ["model.safetensors.index.json", *shards]
    if "pytorch_model.bin" in paths:
        return ["pytorch_model.bin"]
    if "pytorch_model.bin.index.json" in paths:
        shards = sorted(p for p in paths if _BIN_SHARD.fullmatch(p))
        return ["pytorch_model.bin.index.json", *shards]
    return []


def missing_weights(paths: Iterable[str], flavours: Collection[Flavour]) -> str | None:
    """What the repo lacks for one of `flavours`, as a sentence; None when nothing."""
    listed = set(paths)
    for flavour in sorted(flavours):
        if not _weights(listed, flavour):
            if flavour is Flavour.ONNX:
                return _NO_ONNX
            return "it has no weights TEI reads (model.safetensors or pytorch_model.bin)"
    if "config.json" not in listed:
        return "it has no config.json"
    return None


def select_files(paths: Iterable[str], flavours: Collection[Flavour]) -> list[str]:
    """The files to fetch for serving with `flavours`, sorted."""
    listed = set(paths)
    chosen = {
        p for p in listed if p in METADATA_FILES or _POOLING.fullmatch(p) or _DENSE.fullmatch(p)
    }
    for flavour in flavours:
        chosen.update(_weights(listed, flavour))
    return sorted(chosen)
