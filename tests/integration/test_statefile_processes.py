"""The state file under real processes: SIGKILL mid-write, and concurrent writers."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from tei_reconciler.desired.statefile import StateFile, load_state

WORKER = Path(__file__).with_name("statefile_worker.py")


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pad_length(value: int) -> int:
    return (value * 7919) % 20000


def test_a_writer_killed_at_random_points_leaves_the_old_or_the_new_file_intact(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.toml"
    StateFile(path).add_instance("c", {"model_id": "o/m", "max_batch_tokens": 1})
    rng = random.Random(20240501)
    last = 1
    for _ in range(8):
        child = spawn("bump", str(path))
        try:
            assert child.stdout is not None
            for _ in range(rng.randint(1, 25)):
                line = child.stdout.readline()
                assert line, child.stderr.read() if child.stderr else ""
                last = int(line)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            rest = child.stdout.read().split()
            last = int(rest[-1]) if rest else last
        finally:
            child.kill()
            child.wait(timeout=30)
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        state = load_state(path)  # parses and validates: never truncated or mixed
        spec = state.instances["c"]
        assert spec.max_batch_tokens in {last, last + 1}
        assert len(spec.env["PAD"]) == pad_length(spec.max_batch_tokens)
        last = spec.max_batch_tokens
    StateFile(path).set_field("c", "env", None)  # the next writer sweeps orphaned temp files
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state.toml.lock", "state.toml"]


def test_concurrent_read_modify_write_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    StateFile(path).add_instance("c", {"model_id": "o/m", "max_batch_tokens": 1})
    workers, count = 4, 8
    children = [spawn("increment", str(path), str(w), str(count)) for w in range(workers)]
    try:
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=30)
    data = tomllib.loads(path.read_text())["instances"]
    assert data["c"]["max_batch_tokens"] == 1 + workers * count
    assert set(data) == {"c"} | {f"w{w}-{k}" for w in range(workers) for k in range(count)}


def test_concurrent_creators_never_pass_max_instances_together(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    workers = [spawn("fill", str(path), str(i), "6", "10") for i in range(4)]
    added = 0
    for child in workers:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        added += int(out.strip())
    assert added == 10
    assert len(load_state(path).instances) == 10
