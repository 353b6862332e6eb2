"""A child process that edits a state file, for the crash and concurrency tests.

statefile_worker.py bump PATH             set instances.c to ever larger values, forever,
                                          printing each value once it is written
statefile_worker.py increment PATH ID N   N optimistic increments of instances.c and
                                          N instances of its own
statefile_worker.py fill PATH ID N LIMIT  try to add N instances of its own with
                                          max_instances = LIMIT; print how many were added
"""

from __future__ import annotations

import sys
from pathlib import Path

from tei_reconciler.desired.statefile import StateFile, parse_state
from tei_reconciler.errors import RevisionConflict, SpecError


def pad(value: int) -> str:
    """Padding whose length depends on the value, so a torn or mixed write cannot validate
    as a consistent pair."""
    return "x" * ((value * 7919) % 20000)


def bump(sf: StateFile) -> None:
    value = sf.load().instances["c"].max_batch_tokens
    while True:
        value += 1
        sf.apply_instance(
            "c", {"model_id": "o/m", "max_batch_tokens": value, "env": {"PAD": pad(value)}}
        )
        sys.stdout.write(f"{value}\n")
        sys.stdout.flush()


def increment(sf: StateFile, worker: str, count: int) -> None:
    for k in range(count):
        while True:
            data, revision = sf.read()
            current = parse_state(data).instances["c"].max_batch_tokens
            try:
                sf.set_field("c", "max_batch_tokens", current + 1, expected_revision=revision)
                break
            except RevisionConflict:
                continue
        sf.add_instance(f"w{worker}-{k}", {"model_id": "o/m"})


def fill(sf: StateFile, worker: str, count: int) -> None:
    added = 0
    for k in range(count):
        try:
            sf.add_instance(f"w{worker}-{k}", {"model_id": "o/m"})
            added += 1
        except SpecError:
            continue
    sys.stdout.write(f"{added}\n")


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    if mode == "fill":
        fill(StateFile(path, max_instances=int(sys.argv[5])), sys.argv[3], int(sys.argv[4]))
        return
    sf = StateFile(path)
    if mode == "bump":
        bump(sf)
    else:
        increment(sf, sys.argv[3], int(sys.argv[4]))


if __name__ == "__main__":
    main()
