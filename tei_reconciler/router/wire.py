"""Just enough of the protobuf wire format to route a call without re-encoding it.

Every multiplexer wrapper is `{1: Target, 2: <the tei.v1 request>}`. Slicing the raw bytes of
field 2 out of the wrapper and sending them to the instance as they are saves a full decode
and re-encode of the inner request, which for long texts is most of the router's own cost.
Repeated occurrences of an embedded-message field are concatenated, which is exactly
protobuf's merge rule, so the result is byte-for-byte what a full decode would forward.
"""

from __future__ import annotations


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(data)
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise WireError("truncated or overlong varint")


def split_wrapper(data: bytes) -> tuple[bytes | None, bytes | None]:
    """Return the raw bytes of fields 1 (target) and 2 (inner request); None when absent.

    A present but empty field is returned as b"", so "missing" and "all defaults" stay apart.
    """
    target: bytes | None = None
    inner: bytes | None = None
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, pos = _varint(data, pos)
            stop = pos + length
            if stop > end:
                raise WireError("length-delimited field runs past the end")
            chunk = data[pos:stop]
            pos = stop
            if field == 1:
                target = chunk if target is None else target + chunk
            elif field == 2:
                inner = chunk if inner is None else inner + chunk
        elif wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if field == 0:
            raise WireError("field number 0")
    if pos != end:
        raise WireError("fixed-width field runs past the end")
    return target, inner
