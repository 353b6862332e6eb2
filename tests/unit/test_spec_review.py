"""Values that validate yet could never start a process: the file must reject them, with
the field named, instead of the instance failing at every spawn."""

from __future__ import annotations

import pytest

from tei_reconciler.desired.statefile import parse_state
from tei_reconciler.errors import Problem, SpecError

OK = '[instances.a]\nmodel_id = "org/model"\n'


def only(text: str) -> Problem:
    with pytest.raises(SpecError) as caught:
        parse_state(text.encode(), "state.toml")
    found = caught.value.problems
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('env = { A = "x\\u0000y" }', "env"),
        ('extra_args = ["--payload-limit", "9\\u0000"]', "extra_args"),
        ('revision = "main\\u0000"', "revision"),
        ('served_model_name = "m\\u0000"', "served_model_name"),
    ],
)
def test_a_nul_character_no_process_argument_can_hold_is_rejected(line: str, field: str) -> None:
    problem = only(f"{OK}{line}\n")
    assert problem.field == f"instances.a.{field}"
    assert "NUL" in problem.message


def test_an_integer_beyond_64_bits_is_rejected_like_any_toml_overflow() -> None:
    problem = only(f"{OK}max_batch_tokens = 99999999999999999999\n")
    assert problem.field == "instances.a.max_batch_tokens"
    assert "must be a positive integer" in problem.message
