"""Model repositories made by tests: the packaged MiniLM as a sentence-transformers directory,
and tiny repos of a given shape (config.json variants, safetensors headers).

Every helper returns `{repo path: bytes}` so the same files can be written to a directory
(`write_tree`) or served by the test Hub (`tests/support/hub.py`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from tei_reconciler.engine.layout import packaged_onnx, packaged_tokenizer

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

MINILM_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "max_position_embeddings": 512,
    "vocab_size": 30522,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}
MEAN_POOLING = {
    "word_embedding_dimension": 384,
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}
MODULES = [
    {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
    for i, (path, kind) in enumerate(
        [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    )
]


def as_json(value: object) -> bytes:
    return json.dumps(value, indent=2).encode()


def minilm_files(*, pooling: Mapping[str, object] = MEAN_POOLING) -> dict[str, bytes]:
    """The packaged all-MiniLM-L6-v2 laid out like its Hub repo (ONNX export included)."""
    return {
        "config.json": as_json(MINILM_CONFIG),
        "modules.json": as_json(MODULES),
        "sentence_bert_config.json": as_json({"max_seq_length": 256, "do_lower_case": False}),
        "1_Pooling/config.json": as_json(pooling),
        "tokenizer.json": packaged_tokenizer(MINILM_ID).read_bytes(),
        "onnx/model.onnx": packaged_onnx(MINILM_ID).read_bytes(),
    }


def safetensors(tensors: Mapping[str, tuple[str, tuple[int, ...]]], *, data: bool = True) -> bytes:
    """A safetensors file: the JSON header, then zeroed tensor bytes (or none: header only)."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I8": 1}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        end = offset + count * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + (bytes(offset) if data else b"")


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def write_cached(cache: Path, model_id: str, files: Mapping[str, bytes], commit: str) -> Path:
    """`files` as a snapshot in a Hugging Face cache at `commit`, with `refs/main` on it."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return write_tree(repo / "snapshots" / commit, files)


#: A tiny repo of every kind of file a Hub repo holds (configs, safetensors as an LFS file,
#: an ONNX export, weights no server reads, a README), for fetch tests.
TINY_ID = "acme/tiny-embedder"
TINY_WEIGHTS = safetensors({"embeddings": ("F32", (256, 256))})  # 256 KiB: an LFS file
TINY = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8, "architectures": ["BertModel"]}',
    "tokenizer.json": b'{"version": "1.0"}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "model.safetensors": TINY_WEIGHTS,
    "onnx/model.onnx": b"onnx" * 512,
    "flax_model.msgpack": b"x" * 4096,
    "README.md": b"# tiny",
}
