"""The vocabulary every engine module speaks: model kinds, errors, encoded inputs, backends.

Errors carry TEI's `ErrorType`, because the gRPC code, the HTTP status and the metric label
are all derived from it in one place (`ErrorType.grpc_code` / `http_status`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class ModelType(enum.Enum):
    """What a model can answer; each kind enables a different tei.v1 service."""

    EMBEDDING = 0
    CLASSIFIER = 1
    RERANKER = 2


class ErrorType(enum.Enum):
    """TEI's error kinds; the value is the capitalized name TEI puts in `error_type`."""

    UNHEALTHY = "Unhealthy"
    BACKEND = "Backend"
    OVERLOADED = "Overloaded"
    VALIDATION = "Validation"
    TOKENIZER = "Tokenizer"
    EMPTY = "Empty"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]

    @property
    def grpc_code_name(self) -> str:
        """The `grpc.StatusCode` member name (kept as text so this module needs no grpc)."""
        return _GRPC_CODE[self]


_HTTP_STATUS = {
    ErrorType.UNHEALTHY: 503,
    ErrorType.BACKEND: 424,
    ErrorType.OVERLOADED: 429,
    ErrorType.VALIDATION: 422,
    ErrorType.TOKENIZER: 422,
    ErrorType.EMPTY: 400,
}
_GRPC_CODE = {
    ErrorType.UNHEALTHY: "UNAVAILABLE",
    ErrorType.BACKEND: "FAILED_PRECONDITION",
    ErrorType.OVERLOADED: "RESOURCE_EXHAUSTED",
    ErrorType.VALIDATION: "INVALID_ARGUMENT",
    ErrorType.TOKENIZER: "FAILED_PRECONDITION",
    ErrorType.EMPTY: "INVALID_ARGUMENT",
}


class EngineError(Exception):
    """A request failed the way TEI would fail it; `metric` is the `te_request_failure` label."""

    def __init__(self, kind: ErrorType, message: str, metric: str = "validation") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.metric = metric


def validation_error(message: str) -> EngineError:
    return EngineError(ErrorType.VALIDATION, f"Input validation error: {message}")


def backend_error(message: str) -> EngineError:
    return EngineError(ErrorType.BACKEND, f"Backend error: {message}", metric="model_type")


class StartupError(Exception):
    """A fatal start error; the CLI prints it as TEI's `Error: ...` and exits 1."""


#: One model input: text, or token ids used as given (HTTP only, like TEI).
Text = str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Token:
    """One token as `/tokenize` shows it; `start`/`stop` are byte offsets, None for specials."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A validated, truncated model input: token ids plus the characters it counted."""

    ids: tuple[int, ...]
    chars: int
    type_ids: tuple[int, ...] = field(default=())


class Backend(Protocol):
    """A model: tokenization plus batched forward passes. Blocking calls run off the loop."""

    model_type: ModelType
    pooling: str
    max_input_length: int
    dimension: int
    id2label: dict[int, str]
    #: sentence-transformers prompts by name (`config_sentence_transformers.json`).
    prompts: dict[str, str]
    dtype: str
    #: True when forward passes block (run them in a worker thread).
    blocking: bool

    def encode(
        self, text: str, pair: str | None, *, truncate: bool, left: bool, special: bool = True
    ) -> Encoded: ...

    def tokenize(self, text: str, *, add_special_tokens: bool) -> list[Token]: ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool) -> str: ...

    def embed(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """Pooled, not normalized."""
        ...

    def embed_all(self, batch: Sequence[Encoded]) -> list[list[list[float]]]: ...

    def embed_sparse(self, batch: Sequence[Encoded]) -> list[list[tuple[int, float]]]: ...

    def predict(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """Raw scores, one per label in `id2label` order."""
        ...
