"""Property: replacing one instance with any valid fields keeps the rest of the file as is."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tei_reconciler.desired.check import accepts
from tei_reconciler.desired.statefile import StateFile

INPUT = Path(__file__).parent.parent / "golden" / "statefile_input.toml"
TEXT = INPUT.read_text()
HEAD = TEXT[: TEXT.index('[instances."splade"]')]
TAIL = TEXT[TEXT.index("# a comment at the end of the env table") :]

POSITIVE = st.integers(min_value=1, max_value=1 << 20)


def valid(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`values` narrowed to what the state file's own rule for `key` accepts."""
    return values.filter(lambda value: accepts(key, value))


FIELDS = st.fixed_dictionaries(
    {"model_id": st.sampled_from(["o/m", "naver/splade-v3", "/models/local"])},
    optional={
        "state": st.sampled_from(["running", "stopped"]),
        "gpu": st.sampled_from(["all", "none", 0, 3])
        | st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True),
        "port": st.integers(8100, 8179),
        "max_batch_tokens": POSITIVE,
        "pooling": st.sampled_from(["cls", "mean", "splade", "last-token"]),
        "auto_truncate": st.booleans(),
        "served_model_name": valid("served_model_name", st.text(min_size=1, max_size=10)),
        "extra_args": valid(
            "extra_args",
            st.lists(st.text(max_size=8).filter(lambda a: not a.startswith("-")), max_size=3),
        ),
        "env": valid(
            "env",
            st.dictionaries(
                st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True),
                st.text(max_size=8),
                max_size=3,
            ),
        ),
        "health_interval_secs": st.floats(0.5, 100),
    },
)


@settings(max_examples=60, deadline=None)
@given(FIELDS)
def test_applying_any_valid_instance_round_trips_and_keeps_the_rest_byte_for_byte(
    fields: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.toml"
        shutil.copy(INPUT, path)
        state, created = StateFile(path).apply_instance("splade", fields)
        assert not created
        text = path.read_text()
        assert text.startswith(HEAD)
        assert text.endswith(TAIL)
        spec = state.instances["splade"]
        for key, value in fields.items():
            got = getattr(spec, key)
            expected = tuple(value) if isinstance(value, list) else value
            assert got == expected, key
        assert StateFile(path).load() == state
