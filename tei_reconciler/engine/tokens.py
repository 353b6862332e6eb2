"""Special tokens and truncation shared by the backends.

Backends tokenize without special tokens and without truncation, then this module counts,
rejects or truncates exactly as TEI does: the limit includes the special tokens, and the error
text is TEI's "`inputs` must have less than N tokens. Given: M".
"""

from __future__ import annotations

from collections.abc import Sequence

from tei_reconciler.engine.types import Encoded, validation_error


def byte_offsets(text: str) -> list[int]:
    """`result[i]` is the UTF-8 byte offset of character `i` (one extra entry for the end)."""
    offsets = [0] * (len(text) + 1)
    total = 0
    for i, char in enumerate(text):
        offsets[i] = total
        total += len(char.encode("utf-8", "surrogatepass"))
    offsets[len(text)] = total
    return offsets


def assemble(
    first: Sequence[int],
    second: Sequence[int] | None,
    *,
    cls: int,
    sep: int,
    max_length: int,
    truncate: bool,
    left: bool,
    special: bool,
    chars: int,
) -> Encoded:
    """`[CLS] first [SEP] (second [SEP])`, truncated longest-first when allowed."""
    a = list(first)
    b = list(second) if second is not None else None
    n_special = (3 if b is not None else 2) if special else 0
    total = len(a) + (len(b) if b is not None else 0) + n_special
    if total > max_length:
        if not truncate:
            raise validation_error(
                f"`inputs` must have less than {max_length} tokens. Given: {total}"
            )
        excess = total - max_length
        while excess > 0:
            target = b if b is not None and len(b) >= len(a) else a
            if not target:
                break
            if left:
                del target[0]
            else:
                target.pop()
            excess -= 1
    if not special:
        ids = a + (b or [])
        type_ids = [0] * len(a) + [1] * len(b or [])
    elif b is None:
        ids = [cls, *a, sep]
        type_ids = [0] * len(ids)
    else:
        ids = [cls, *a, sep, *b, sep]
        type_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return Encoded(ids=tuple(ids), chars=chars, type_ids=tuple(type_ids))
