"""`/instances/{name}/logs`: Python slice semantics exactly, any bytes, any file size."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tei_reconciler.api import logs
from tei_reconciler.api.logs import read_slice
from tei_reconciler.drivers.logrotate import rotate_log

from .harness import Api

FIVE = b"".join(f'{{"line":{i}}}\n'.encode() for i in range(5))


@pytest.mark.parametrize(
    ("start", "end", "lines", "norm_start", "norm_end"),
    [
        # tei-manager's own cases (5-line file)
        (None, None, [0, 1, 2, 3, 4], 0, 5),
        (0, 2, [0, 1], 0, 2),
        (-2, None, [3, 4], 3, 5),
        # negative, oversized and inverted ranges
        (None, -1, [0, 1, 2, 3], 0, 4),
        (-100, None, [0, 1, 2, 3, 4], 0, 5),
        (-3, -1, [2, 3], 2, 4),
        (2, 100, [2, 3, 4], 2, 5),
        (100, 200, [], 5, 5),
        (4, 2, [], 4, 2),
        (-1, -3, [], 4, 2),
        (3, 3, [], 3, 3),
        (0, -100, [], 0, 0),
    ],
)
def test_slices_follow_python_and_echo_the_normalised_bounds(
    tmp_path: Path,
    start: int | None,
    end: int | None,
    lines: list[int],
    norm_start: int,
    norm_end: int,
) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(FIVE)
    got = read_slice(path, start, end)
    assert got.lines == [f'{{"line":{i}}}' for i in lines]
    assert (got.start, got.end, got.total_lines) == (norm_start, norm_end, 5)


def test_three_lines_asked_from_5_to_2_echo_3_and_2_like_tei_manager(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"a\nb\nc\n")
    got = read_slice(path, 5, 2)
    assert (got.lines, got.start, got.end, got.total_lines) == ([], 3, 2, 3)


def test_lines_are_counted_like_rust_str_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    for data, expected in [
        (b"", []),
        (b"\n", [""]),
        (b"a", ["a"]),
        (b"a\n", ["a"]),
        (b"a\r\nb", ["a", "b"]),
        (b"a\n\nb\n", ["a", "", "b"]),
    ]:
        path.write_bytes(data)
        got = read_slice(path, None, None)
        assert (got.lines, got.total_lines) == (expected, len(expected)), data


def test_bytes_that_are_not_utf8_are_replaced_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"ok\n\xff\xfe broken \xc3\n")
    assert read_slice(path, None, None).lines == ["ok", "\ufffd\ufffd broken \ufffd"]


def test_a_tail_of_a_large_file_is_read_from_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(f"line {i:06d}\n".encode() for i in range(50_000)))
    monkeypatch.setattr(logs, "CHUNK", 4096)  # many chunks in both directions
    tail = read_slice(path, -3, None)
    assert tail.lines == ["line 049997", "line 049998", "line 049999"]
    assert (tail.start, tail.end, tail.total_lines) == (49_997, 50_000, 50_000)
    head = read_slice(path, 10_000, 10_002)
    assert head.lines == ["line 010000", "line 010001"]
    middle = read_slice(path, 30_000, 30_001)
    assert middle.lines == ["line 030000"]


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="ab\r", max_size=4), max_size=12),
    trailing=st.booleans(),
    start=st.none() | st.integers(-15, 15),
    end=st.none() | st.integers(-15, 15),
    chunk=st.integers(1, 8),
)
def test_any_slice_equals_the_python_slice_of_the_lines(
    lines: list[str], trailing: bool, start: int | None, end: int | None, chunk: int
) -> None:
    lines = [line.rstrip("\r") for line in lines]
    data = "\n".join(lines) + ("\n" if trailing and lines else "")
    if not trailing and lines and lines[-1] == "":
        lines = lines[:-1]  # "a\n" + "" is the one line "a"
    original = logs.CHUNK
    logs.CHUNK = chunk
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.log"
            path.write_bytes(data.encode())
            got = read_slice(path, start, end)
    finally:
        logs.CHUNK = original
    norm = slice(start, end).indices(len(lines))
    assert got.total_lines == len(lines)
    assert got.lines == lines[start:end]
    assert (got.start, got.end) == norm[:2]


@pytest.mark.anyio
async def test_the_logs_route_slices_the_instances_own_log(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    (api.runtime / "logs" / "a.log").write_bytes(FIVE)
    response = await api.client.get("/instances/a/logs", params={"start": -2})
    assert response.status_code == 200
    assert response.json() == {
        "lines": ['{"line":3}', '{"line":4}'],
        "start": 3,
        "end": 5,
        "total_lines": 5,
    }


@pytest.mark.anyio
async def test_an_instance_without_a_log_yet_has_no_lines(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    body = (await api.client.get("/instances/a/logs")).json()
    assert body == {"lines": [], "start": 0, "end": 0, "total_lines": 0}


@pytest.mark.anyio
async def test_logs_of_unknown_names_and_path_tricks_are_404(api: Api) -> None:
    (api.runtime / "secret.log").write_text("TOP-SECRET-TEXT\n")
    (api.runtime / "logs" / "ghost.log").write_text("TOP-SECRET-TEXT\n")
    for name in ("ghost", "..%2Fsecret", "..", "%2E%2E%2Fsecret"):
        response = await api.client.get(f"/instances/{name}/logs")
        assert response.status_code == 404, name
        assert "TOP-SECRET-TEXT" not in response.text


@pytest.mark.anyio
async def test_a_start_that_is_not_an_integer_is_400(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    response = await api.client.get("/instances/a/logs", params={"start": "abc"})
    assert response.status_code == 400
    assert response.json()["details"] == [
        {"field": "start", "message": "must be an integer", "line": None, "column": None}
    ]


@pytest.mark.anyio
async def test_a_follower_notices_a_rotation_even_when_the_log_has_regrown_past_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "alpha.log"
    log.write_bytes(b"first\n")
    lines = logs.follow(log, 0, poll_interval=0.01)
    assert isinstance(lines, AsyncGenerator)
    try:
        assert await anext(lines) == (0, "first")
        assert rotate_log(log, max_bytes=1, backups=1)
        with log.open("ab") as f:  # more than was read before, while the follower waits
            f.write(b"second, after the rotation\n")
        assert await anext(lines) == (1, "second, after the rotation")
    finally:
        await lines.aclose()
