"""Churn against a real `tei-reconciler run`: hundreds of create/delete/recreate cycles of the
same names through the REST API, with no pause, while another instance serves through the
router. The control loop must survive all of it and converge: statuses match the processes,
the serving instance answered every call, and a new instance still becomes Ready."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .invariants import converged
from support.reconciler import Reconciler
from support.traffic import background_traffic

ONE_NAME_CYCLES = 200
NAMES = 4
CYCLES_PER_NAME = 40


@pytest.fixture
def reconciler(tmp_path: Path) -> Iterator[Reconciler]:
    # The control loop is under test, not the data plane: the grpcio router keeps it lean
    # (Envoy's drain on every stop costs a configuration round trip; tests/chaos/test_random.py
    # runs the default data plane).
    server = Reconciler(tmp_path, settings={"DATA_PLANE": "grpcio"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def churn(server: Reconciler, name: str, cycles: int) -> None:
    """Create then delete `name` `cycles` times, each request as soon as the last answered."""
    with server.api() as client:
        for _ in range(cycles):
            created = client.post(
                "/instances", json={"name": name, "model_id": "hash/384", "gpu": "none"}
            )
            assert created.status_code == 201, created.text
            deleted = client.delete(f"/instances/{name}")
            assert deleted.status_code == 204, deleted.text


def test_hundreds_of_create_delete_cycles_leave_a_live_converged_reconciler(
    reconciler: Reconciler,
) -> None:
    reconciler.create("serving")
    reconciler.wait_ready("serving")
    with background_traffic(f"127.0.0.1:{reconciler.grpc_port}", instance="serving") as traffic:
        churn(reconciler, "churn", ONE_NAME_CYCLES)
        with ThreadPoolExecutor(NAMES) as pool:
            done = [
                pool.submit(churn, reconciler, f"churn-{i}", CYCLES_PER_NAME) for i in range(NAMES)
            ]
            for future in done:
                future.result()
        converged(reconciler, {"serving"})
        reconciler.create("fresh")
        reconciler.wait_ready("fresh")
    converged(reconciler, {"serving", "fresh"})
    reconciler.check_running()
    assert not traffic.failed(), traffic.summary()
    assert traffic.answered() > 0, traffic.summary()
