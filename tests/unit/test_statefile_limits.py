"""A huge or strange state file costs bounded work: refused above the size limit without being
read, at most MAX_PROBLEMS problems listed (the rest counted), never a blocking read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tei_reconciler.desired.statefile import (
    MAX_PROBLEMS,
    StateFile,
    load_state,
    parse_state,
    read_bounded,
)
from tei_reconciler.errors import SpecError, StateFileError, StateFileTooLarge

OK = '[instances.a]\nmodel_id = "org/model"\n'


def unknown_keys(count: int) -> bytes:
    return (OK + "".join(f"k{i} = 1\n" for i in range(count))).encode()


def test_problems_beyond_the_cap_are_counted_not_listed() -> None:
    with pytest.raises(SpecError) as caught:
        parse_state(unknown_keys(5000), "state.toml")
    problems = caught.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].message == "unknown key 'k0'"
    assert (problems[0].line, problems[0].column) == (3, 1)
    assert problems[MAX_PROBLEMS - 1].message == f"unknown key 'k{MAX_PROBLEMS - 1}'"
    last = problems[-1]
    assert last.code == "more"
    assert last.message == (
        f"... and {5000 - MAX_PROBLEMS} more problems (only the first {MAX_PROBLEMS} shown)"
    )


def test_a_file_with_fewer_problems_than_the_cap_lists_them_all() -> None:
    with pytest.raises(SpecError) as caught:
        parse_state(unknown_keys(3), "state.toml")
    assert [p.message for p in caught.value.problems] == [
        "unknown key 'k0'",
        "unknown key 'k1'",
        "unknown key 'k2'",
    ]


def test_bytes_above_the_limit_are_refused_before_parsing() -> None:
    data = b"this is not TOML at all = = =\n" * 100
    with pytest.raises(SpecError) as caught:
        parse_state(data, "state.toml", max_bytes=1024)
    (problem,) = caught.value.problems
    assert problem.code == "too_large"
    assert problem.message == "the state is 2.9 KiB, more than max_state_bytes (1.0 KiB)"


def test_a_file_above_the_limit_is_refused_unread_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_bytes(OK.encode() + b"#" * (3 * 1024 * 1024))
    with pytest.raises(StateFileTooLarge) as caught:
        load_state(path, max_bytes=1024 * 1024)
    assert str(caught.value) == (
        f"{path} is 3.0 MiB, more than max_state_bytes (1.0 MiB); not read"
    )
    with pytest.raises(StateFileTooLarge):
        StateFile(path, max_bytes=1024 * 1024).read()


def test_a_directory_or_a_fifo_in_place_of_the_file_is_a_clear_error_that_never_blocks(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "state.toml"
    directory.mkdir()
    with pytest.raises(StateFileError, match="is a directory, not a state file"):
        read_bounded(directory)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(StateFileError, match="is not a regular file"):
        read_bounded(fifo)


def test_a_too_large_file_can_be_replaced_whole_without_if_match(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_bytes(b"#" * 4096)
    state = StateFile(path, max_bytes=1024)
    with pytest.raises(StateFileTooLarge):
        state.replace(OK.encode(), expected_revision="abc")
    with pytest.raises(StateFileTooLarge):
        state.set_field("a", "port", 8080)
    replaced = state.replace(OK.encode())
    assert set(replaced.instances) == {"a"}
    assert path.read_bytes() == OK.encode()
