"""Whatever bytes or TOML a user or a tool writes, the only failure is a SpecError."""

from __future__ import annotations

import datetime as dt
import string

import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from tei_reconciler.desired.fields import INSTANCE_KEYS
from tei_reconciler.desired.statefile import parse_state
from tei_reconciler.errors import SpecError

KEYS = st.sampled_from(
    [*INSTANCE_KEYS, "instances", "defaults", "name", "a", "bge", "Bad Name", "a.b", ""]
)
SCALARS = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.text(max_size=20)
    | st.sampled_from(["all", "none", "o/m", "/abs", "cls", "stopped", "--port=1"])
    | st.datetimes(timezones=st.just(dt.UTC) | st.none())
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
DOCS = st.dictionaries(
    st.sampled_from(["instances", "defaults", "instance", "x"]),
    st.dictionaries(KEYS, VALUES, max_size=4) | VALUES,
    max_size=3,
)
TOML_ALPHABET = string.ascii_lowercase + string.digits + "[]{}=.\"'#,\n -_:\\"


def check(data: bytes) -> None:
    problems = []
    try:
        parse_state(data, "fuzz.toml", reserved_ports=frozenset({9000}))
    except SpecError as exc:
        problems = exc.problems
        assert problems
    assert all(p.path == "fuzz.toml" for p in problems)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_spec_error(data: bytes) -> None:
    check(data)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=TOML_ALPHABET, max_size=200))
def test_arbitrary_toml_like_text_never_raises_anything_but_spec_error(text: str) -> None:
    check(text.encode())


@settings(max_examples=200, deadline=None)
@given(DOCS)
def test_arbitrary_toml_documents_never_raise_anything_but_spec_error(
    doc: dict[str, object],
) -> None:
    try:
        text = tomlkit.dumps(doc)
    except Exception:  # a document TOML cannot hold is not the subject here
        return
    check(text.encode())
