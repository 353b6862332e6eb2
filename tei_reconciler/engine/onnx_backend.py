"""Real models: any sentence-transformers ONNX export, run by onnxruntime on the CPU.

`layout.py` says which files make the model; this module tokenizes, runs the graph and pools.
The tokenizer's own truncation and padding (often baked into `tokenizer.json`) are turned off:
the engine counts, rejects or truncates inputs by TEI's rules (the limit includes the special
tokens, longest sequence first), adds the special tokens with the tokenizer's post-processor,
and pads per batch itself. onnxruntime, tokenizers and numpy are imported here only, so
engines with hash models never pay for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tei_reconciler.engine.layout import ModelLayout
from tei_reconciler.engine.tokens import byte_offsets
from tei_reconciler.engine.types import (
    Encoded,
    ModelType,
    StartupError,
    Token,
    validation_error,
)

_MISSING = (
    "onnxruntime, tokenizers and numpy are not installed; install the extra "
    "`tei-reconciler[embedded-model]` (pip install 'tei-reconciler[embedded-model]')"
)
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


class OnnxBackend:
    """Pooled sentence embeddings from an ONNX graph (cls, mean or last-token pooling)."""

    model_type = ModelType.EMBEDDING
    dtype = "float32"
    blocking = True

    def __init__(self, layout: ModelLayout, *, threads: int) -> None:
        self.id2label: dict[int, str] = {}
        self.layout = layout
        self.pooling = layout.pooling
        self.max_input_length = layout.max_input_length
        self.prompts = dict(layout.prompts)
        try:
            import numpy as np  # noqa: PLC0415 - only real-model engines pay for it
            import onnxruntime as ort  # noqa: PLC0415 - only real-model engines pay for it
            from tokenizers import Tokenizer  # noqa: PLC0415 - only real-model engines pay for it
        except ImportError as exc:
            raise StartupError(_MISSING) from exc
        self._np: Any = np
        try:
            self._tokenizer: Any = Tokenizer.from_file(str(layout.tokenizer))
        except Exception as exc:
            raise StartupError(f"{layout.tokenizer}: not a tokenizers file: {exc}") from exc
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(
                str(layout.onnx), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise StartupError(f"{layout.onnx}: onnxruntime cannot load it: {exc}") from exc
        inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise StartupError(
                f"{layout.onnx}: the graph takes {sorted(inputs)}; a text encoder takes "
                "input_ids and attention_mask"
            )
        self._inputs = inputs
        outputs = self._session.get_outputs()
        chosen = next((o for o in outputs if o.name in _TOKEN_OUTPUTS), outputs[0])
        self._output = chosen.name
        shape = list(chosen.shape)
        width = shape[-1] if shape and isinstance(shape[-1], int) else None
        dimension = width or layout.dimension
        if dimension is None:
            raise StartupError(f"{layout.onnx}: cannot tell the embedding size")
        self.dimension = int(dimension)
        self._token_level = len(shape) == 3

    # -- tokenization --------------------------------------------------------------------

    def encode(
        self, text: str, pair: str | None, *, truncate: bool, left: bool, special: bool = True
    ) -> Encoded:
        first = self._tokenizer.encode(text, add_special_tokens=False)
        second = None if pair is None else self._tokenizer.encode(pair, add_special_tokens=False)
        n_special = self._tokenizer.num_special_tokens_to_add(second is not None) if special else 0
        a, b = len(first.ids), len(second.ids) if second is not None else 0
        total = a + b + n_special
        limit = self.max_input_length
        if total > limit:
            if not truncate:
                raise validation_error(
                    f"`inputs` must have less than {limit} tokens. Given: {total}"
                )
            excess = total - limit
            while excess > 0 and (a or b):  # longest first, like TEI's tokenizer setting
                if second is not None and b >= a:
                    b -= 1
                else:
                    a -= 1
                excess -= 1
            direction = "left" if left else "right"
            first.truncate(a, direction=direction)
            if second is not None:
                second.truncate(b, direction=direction)
        merged = self._tokenizer.post_process(first, second, add_special_tokens=special)
        return Encoded(
            ids=tuple(merged.ids),
            chars=len(text) + (len(pair) if pair is not None else 0),
            type_ids=tuple(merged.type_ids),
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

    # -- forward passes ------------------------------------------------------------------

    def _run(self, batch: Sequence[Encoded]) -> tuple[Any, Any]:
        np = self._np
        width = max(len(e.ids) for e in batch)
        ids = np.full((len(batch), width), self.layout.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            if e.type_ids:
                types[row, : len(e.type_ids)] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = types
        if "position_ids" in self._inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape)
        (output,) = self._session.run([self._output], feeds)
        return output, mask

    def embed(self, batch: Sequence[Encoded]) -> list[list[float]]:
        np = self._np
        hidden, mask = self._run(batch)
        if not self._token_level:
            pooled = hidden
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last-token":
            last = mask.sum(axis=1) - 1
            pooled = hidden[np.arange(len(batch)), last]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return [list(map(float, row)) for row in pooled]

    def embed_all(self, batch: Sequence[Encoded]) -> list[list[list[float]]]:
        if not self._token_level:
            raise validation_error("this ONNX export gives pooled vectors only")
        hidden, _ = self._run(batch)
        return [
            [list(map(float, hidden[row, t])) for t in range(len(e.ids))]
            for row, e in enumerate(batch)
        ]

    def embed_sparse(self, batch: Sequence[Encoded]) -> list[list[tuple[int, float]]]:
        raise AssertionError("callers check the pooling before asking for sparse vectors")

    def predict(self, batch: Sequence[Encoded]) -> list[list[float]]:
        raise AssertionError("callers check the model type before asking for predictions")
