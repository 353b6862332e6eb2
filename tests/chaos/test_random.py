"""Random operations against a real `tei-reconciler run` with traffic flowing through its data
plane (each data plane in turn): creates, deletes, edits, stops, starts, restarts and
`kill -9` of instance processes, issued back to back in rounds. After each round the
reconciler must settle with every invariant holding (invariants.py) and every instance where
its desired state says, and the instance that served throughout answered every call.

The randomness is seeded: `CHAOS_SEED` picks it, else a fixed one under CI (so a red CI run
fails the same way on the next run), else a new one each run; the seed is printed and is in
every failure message. The runs are bounded by their number of operations, not by time:
`CHAOS_ROUNDS` rounds (default 20, about half a minute per data plane) of
`OPERATIONS_PER_ROUND` operations; raise it for a longer soak.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .invariants import converged
from support.reconciler import Reconciler
from support.traffic import background_traffic
from support.waiting import wait_until

CI_SEED = 20_240_501
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "20"))
OPERATIONS_PER_ROUND = 12
NAMES = ("c0", "c1", "c2")


def chaos_seed() -> int:
    if "CHAOS_SEED" in os.environ:
        return int(os.environ["CHAOS_SEED"])
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        return CI_SEED
    return random.SystemRandom().randrange(1 << 32)


@dataclass
class Desired:
    """What the test asked for, per instance: None (absent), "running" or "stopped"."""

    state: dict[str, str] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)


class Chaos:
    """The operations, each on a name chosen by `rng`, each checked for its HTTP answer."""

    def __init__(self, server: Reconciler, client: httpx.Client, rng: random.Random) -> None:
        self.server, self.client, self.rng = server, client, rng
        self.desired = Desired()
        self.done: list[str] = []  # the operations so far, for the failure message

    def ops(self) -> list[Callable[[str], None]]:
        return [self.create, self.delete, self.edit, self.stop, self.start, self.restart, self.kill]

    def step(self) -> None:
        name = self.rng.choice(NAMES)
        op = self.rng.choice(self.ops())
        op(name)

    def _expect(self, response: httpx.Response, *codes: int) -> None:
        assert response.status_code in codes, f"{self.done[-1]}: {response.text}"

    def create(self, name: str) -> None:
        if name in self.desired.state:
            return self.edit(name)
        batch = self.rng.choice([4096, 8192, 16384])
        self.done.append(f"create {name} max_batch_tokens={batch}")
        body = {"name": name, "model_id": "hash/384", "gpu": "none", "max_batch_tokens": batch}
        self._expect(self.client.post("/instances", json=body), 201)
        self.desired.state[name], self.desired.batch[name] = "running", batch
        return None

    def delete(self, name: str) -> None:
        self.done.append(f"delete {name}")
        present = name in self.desired.state
        self._expect(self.client.delete(f"/instances/{name}"), 204 if present else 404)
        self.desired.state.pop(name, None)

    def edit(self, name: str) -> None:
        if name not in self.desired.state:
            return self.create(name)
        batch = self.rng.choice([b for b in (4096, 8192, 16384) if b != self.desired.batch[name]])
        self.done.append(f"edit {name} max_batch_tokens={batch}")
        body = {"model_id": "hash/384", "gpu": "none", "max_batch_tokens": batch}
        if self.desired.state[name] == "stopped":
            body["state"] = "stopped"
        self._expect(self.client.put(f"/instances/{name}", json=body), 200)
        self.desired.batch[name] = batch
        return None

    def _lifecycle(self, name: str, verb: str, state: str) -> None:
        self.done.append(f"{verb} {name}")
        present = name in self.desired.state
        self._expect(self.client.post(f"/instances/{name}/{verb}"), 200 if present else 404)
        if present:
            self.desired.state[name] = state

    def stop(self, name: str) -> None:
        self._lifecycle(name, "stop", "stopped")

    def start(self, name: str) -> None:
        self._lifecycle(name, "start", "running")

    def restart(self, name: str) -> None:
        self._lifecycle(name, "restart", "running")  # a stopped instance starts too

    def kill(self, name: str) -> None:
        found = self.client.get(f"/instances/{name}")
        pid = found.json().get("pid") if found.status_code == 200 else None
        self.done.append(f"kill -9 {name} (pid {pid})")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile (a stop)
                os.kill(pid, signal.SIGKILL)

    def where_wanted(self, statuses: list[dict[str, Any]]) -> list[str]:
        """How `statuses` differ from what the test asked for (settled, so nothing moves)."""
        shown = {s["name"]: s for s in statuses}
        wrong = []
        for name in NAMES:
            want, status = self.desired.state.get(name), shown.get(name)
            if want is None and status is not None:
                wrong.append(f"{name}: deleted, still listed ({status['phase']})")
            elif want == "stopped" and (status is None or status["phase"] != "Stopped"):
                wrong.append(f"{name}: stopped, shown {status and status['phase']}")
            elif want == "running" and (status is None or not status["ready"]):
                wrong.append(f"{name}: running, shown {status and status['phase']}")
            elif want == "running" and status is not None:
                batch = status["spec"]["max_batch_tokens"]
                if batch != self.desired.batch[name]:
                    wrong.append(f"{name}: runs max_batch_tokens {batch}")
        return wrong


@pytest.fixture
def reconciler(tmp_path: Path, data_plane: str) -> Iterator[Reconciler]:
    server = Reconciler(tmp_path, settings={"DATA_PLANE": data_plane})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(60 + 10 * ROUNDS)  # a longer soak gets the time it asks for
def test_random_operations_with_traffic_flowing_leave_every_invariant_holding(
    reconciler: Reconciler, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = chaos_seed()
    with capsys.disabled():
        print(f"\nchaos seed {seed} (CHAOS_SEED={seed} repeats these operations)")
    rng = random.Random(seed)
    reconciler.create("serving")
    reconciler.wait_ready("serving")
    with (
        background_traffic(f"127.0.0.1:{reconciler.grpc_port}", instance="serving") as traffic,
        reconciler.api() as client,
    ):
        chaos = Chaos(reconciler, client, rng)
        for round_ in range(ROUNDS):
            for _ in range(OPERATIONS_PER_ROUND):
                chaos.step()
            context = f"seed {seed}, round {round_}, after: {'; '.join(chaos.done)}"
            try:
                wanted = {"serving", *chaos.desired.state}
                converged(reconciler, wanted)
                wait_until(
                    lambda: not chaos.where_wanted(reconciler.instances()),
                    "every instance as desired",
                    detail=lambda: "\n".join(chaos.where_wanted(reconciler.instances())),
                )
                converged(reconciler, wanted)  # and ready ones answer through the data plane
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{context}") from exc
    reconciler.check_running()
    assert not traffic.failed(), f"{traffic.summary()} (seed {seed})"
    assert traffic.answered() > 0
