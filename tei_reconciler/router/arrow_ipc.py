"""Arrow IPC encoding and decoding for the Arrow RPCs (see `arrow.py` for the contract).

Kept apart so pyarrow and numpy are imported only when the first Arrow call arrives: most
deployments never make one, and the reconciler's idle footprint stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np
import pyarrow as pa

from tei_reconciler.router.routes import RouteError

_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_DENSE_ITEM = pa.field("item", pa.float32(), nullable=False)
_SPARSE_ITEM = pa.field(
    "item",
    pa.struct(
        [
            pa.field("index", pa.uint32(), nullable=False),
            pa.field("value", pa.float32(), nullable=False),
        ]
    ),
    nullable=False,
)


def read_texts(ipc: bytes) -> list[str | None]:
    """Column 0 of every batch of an IPC stream, nulls kept."""
    try:
        reader = pa.ipc.open_stream(ipc)
        batches = list(reader)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RouteError(_INVALID, f"Invalid Arrow IPC: {exc}") from exc
    if not batches:
        raise RouteError(_INVALID, "No RecordBatch in stream")
    schema = reader.schema
    if not schema.names:
        raise RouteError(_INVALID, "First column must be Utf8 or LargeUtf8 (no columns)")
    kind = schema.field(0).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise RouteError(_INVALID, f"First column must be Utf8 or LargeUtf8, not {kind}")
    texts: list[str | None] = []
    for batch in batches:
        texts.extend(batch.column(0).to_pylist())
    return texts


def write_ipc(name: str, column: pa.Array, nullable: bool) -> bytes:
    schema = pa.schema([pa.field(name, column.type, nullable=nullable)])
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        writer.write_batch(pa.record_batch([column], schema=schema))
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _mask(texts: list[str | None]) -> pa.Array | None:
    if all(t is not None for t in texts):
        return None
    return pa.array([t is None for t in texts], type=pa.bool_())


def dense_table(
    texts: list[str | None], vectors: Sequence[Sequence[float]] | None, dim: int
) -> bytes:
    """One FixedSizeList row per text; `vectors` holds the non-null rows' embeddings in
    order (None: zeros, for `noop`)."""
    values = np.zeros((len(texts), dim), dtype=np.float32)
    if vectors is not None:
        present = (i for i, t in enumerate(texts) if t is not None)
        for row, vector in zip(present, vectors, strict=True):
            values[row] = vector
    mask = _mask(texts)
    column = pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1)), type=pa.list_(_DENSE_ITEM, dim), mask=mask
    )
    return write_ipc("embeddings", column, nullable=mask is not None)


def sparse_table(texts: list[str | None], rows: list[tuple[list[int], list[float]]]) -> bytes:
    offsets = [0]
    indices: list[int] = []
    weights: list[float] = []
    answers = iter(rows)
    for text in texts:
        if text is not None:
            idx, val = next(answers)
            indices.extend(idx)
            weights.extend(val)
        offsets.append(len(indices))
    values = pa.StructArray.from_arrays(
        [pa.array(indices, pa.uint32()), pa.array(weights, pa.float32())],
        fields=list(_SPARSE_ITEM.type),
    )
    mask = _mask(texts)
    column = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), values, type=pa.list_(_SPARSE_ITEM), mask=mask
    )
    return write_ipc("sparse_embeddings", column, nullable=mask is not None)
