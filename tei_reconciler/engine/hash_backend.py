"""A deterministic stand-in model for fast tests: `hash/<dim>`, `hash/splade`,
`hash/reranker`, `hash/classifier`.

It needs nothing beyond the standard library, so an engine with a hash model starts in well
under a second (the reconciler's tests spawn many). Tokens are Unicode code points (ids
`1000 + ord(c)`), which makes Decode exact and offsets easy to check; vectors are blake2b
streams of the token ids, so the same text always gives the same vector on any machine.
Reranker scores grow with the words a text shares with the query, so rankings are meaningful.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence

from tei_reconciler.engine.tokens import assemble, byte_offsets
from tei_reconciler.engine.types import Encoded, ModelType, StartupError, Token

CLS, SEP, PAD = 101, 102, 0
_OFFSET = 1000
_SPECIALS = {CLS: "[CLS]", SEP: "[SEP]", PAD: "[PAD]"}
SPLADE_VOCAB = 30522
_WORD = re.compile(r"\w+")


def _floats(seed: bytes, count: int) -> list[float]:
    """`count` deterministic floats in [-1, 1) derived from `seed`."""
    out: list[float] = []
    block = 0
    while len(out) < count:
        digest = hashlib.blake2b(seed + block.to_bytes(4, "little"), digest_size=64).digest()
        out.extend(v / 32768.0 - 1.0 for v in struct.unpack("<32H", digest))
        block += 1
    return out[:count]


def _ids_bytes(ids: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(ids)}I", *ids)


def _words(encoded: Encoded, segment: int) -> set[str]:
    chars = "".join(
        chr(i - _OFFSET) if i >= _OFFSET else " "
        for i, t in zip(encoded.ids, encoded.type_ids, strict=True)
        if t == segment
    )
    return {w.lower() for w in _WORD.findall(chars)}


class HashBackend:
    """See the module docstring; `model_id` picks the kind."""

    blocking = False
    dtype = "float32"

    def __init__(self, model_id: str, max_input_length: int = 512) -> None:
        kind = model_id.removeprefix("hash/")
        self.max_input_length = max_input_length
        self.pooling = "mean"
        self.id2label: dict[int, str] = {}
        self.prompts: dict[str, str] = {}
        self.model_type = ModelType.EMBEDDING
        self.dimension = 384
        if kind == "splade":
            self.pooling = "splade"
            self.dimension = SPLADE_VOCAB
        elif kind == "reranker":
            self.model_type = ModelType.RERANKER
            self.id2label = {0: "LABEL_0"}
        elif kind == "classifier":
            self.model_type = ModelType.CLASSIFIER
            self.id2label = {0: "negative", 1: "positive"}
        elif kind.isdigit() and 0 < int(kind) <= 65536:
            self.dimension = int(kind)
        else:
            raise StartupError(
                f"Could not find model `{model_id}`: hash models are hash/<dim>, "
                "hash/splade, hash/reranker and hash/classifier"
            )

    def encode(
        self, text: str, pair: str | None, *, truncate: bool, left: bool, special: bool = True
    ) -> Encoded:
        first = [_OFFSET + ord(c) for c in text]
        second = None if pair is None else [_OFFSET + ord(c) for c in pair]
        chars = len(text) + (len(pair) if pair is not None else 0)
        return assemble(
            first,
            second,
            cls=CLS,
            sep=SEP,
            max_length=self.max_input_length,
            truncate=truncate,
            left=left,
            special=special,
            chars=chars,
        )

    def tokenize(self, text: str, *, add_special_tokens: bool) -> list[Token]:
        offsets = byte_offsets(text)
        tokens = [
            Token(_OFFSET + ord(c), c, False, offsets[i], offsets[i + 1])
            for i, c in enumerate(text)
        ]
        if add_special_tokens:
            return [
                Token(CLS, "[CLS]", True, None, None),
                *tokens,
                Token(SEP, "[SEP]", True, None, None),
            ]
        return tokens

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool) -> str:
        parts: list[str] = []
        for i in ids:
            if i >= _OFFSET and i - _OFFSET <= 0x10FFFF:
                parts.append(chr(i - _OFFSET))
            elif not skip_special_tokens:
                parts.append(_SPECIALS.get(i, "[UNK]"))
        return "".join(parts)

    def embed(self, batch: Sequence[Encoded]) -> list[list[float]]:
        if self.pooling == "splade":
            dense: list[list[float]] = []
            for sparse in self.embed_sparse(batch):
                vector = [0.0] * self.dimension
                for index, value in sparse:
                    vector[index] = value
                dense.append(vector)
            return dense
        return [_floats(b"pool" + _ids_bytes(e.ids), self.dimension) for e in batch]

    def embed_all(self, batch: Sequence[Encoded]) -> list[list[list[float]]]:
        dim = min(self.dimension, 1024)
        return [
            [_floats(b"tok" + _ids_bytes([i, p]), dim) for p, i in enumerate(e.ids)] for e in batch
        ]

    def embed_sparse(self, batch: Sequence[Encoded]) -> list[list[tuple[int, float]]]:
        out: list[list[tuple[int, float]]] = []
        for e in batch:
            values: dict[int, float] = {}
            for i in e.ids:
                if i in _SPECIALS:
                    continue
                digest = hashlib.blake2b(_ids_bytes([i]), digest_size=8).digest()
                h = int.from_bytes(digest, "little")
                index = h % SPLADE_VOCAB
                values[index] = max(values.get(index, 0.0), 0.1 + (h >> 32) % 1000 / 500.0)
            out.append(sorted(values.items()))
        return out

    def predict(self, batch: Sequence[Encoded]) -> list[list[float]]:
        out: list[list[float]] = []
        for e in batch:
            jitter = _floats(b"cls" + _ids_bytes(e.ids), len(self.id2label))
            if self.model_type is ModelType.RERANKER:
                query, text = _words(e, 0), _words(e, 1)
                overlap = len(query & text) / max(len(query | text), 1)
                out.append([8.0 * overlap - 4.0 + 0.5 * jitter[0]])
            else:
                out.append([3.0 * v for v in jitter])
        return out
