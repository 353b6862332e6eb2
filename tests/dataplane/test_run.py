"""`tei-reconciler run` with each data plane, as a user meets it: the data plane named in
/health and /ready and on each instance, and `?wait=ready` answering only once a call through
the gRPC port reaches the instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.reconciler import Reconciler
from support.waiting import wait_until


@pytest.fixture
def running(tmp_path: Path, data_plane: str) -> Iterator[Reconciler]:
    reconciler = Reconciler(tmp_path, config=f'data_plane = "{data_plane}"\n')
    reconciler.start()
    try:
        yield reconciler
    finally:
        reconciler.stop()


def embed(port: int, instance: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs="x"),
                metadata=(("x-tei-instance", instance),),
                timeout=30,
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return f"OK {len(reply.embeddings)}"


def test_wait_ready_answers_once_calls_through_the_grpc_port_reach_the_instance(
    running: Reconciler, data_plane: str
) -> None:
    with running.api() as api:
        health = api.get("/health").json()
        created = api.post(
            "/instances?wait=ready&timeout=60",
            json={"name": "e2e", "model_id": "hash/8", "gpu": "none"},
        )
        first_call = embed(running.grpc_port, "e2e")
        ready = api.get("/ready").json()
        listed = api.get("/instances").json()
        stopped = api.post("/instances/e2e/stop").json()
    assert health["data_plane"]["kind"] == data_plane
    assert health["data_plane"]["up"] is True
    assert created.status_code == 201, created.text
    assert created.json()["routed_by"] == data_plane
    assert first_call == "OK 8"  # no retry: ?wait=ready waited for the data plane
    assert ready["data_plane"]["kind"] == data_plane
    assert [i["routed_by"] for i in listed] == [data_plane]
    assert stopped["name"] == "e2e"
    wait_until(lambda: embed(running.grpc_port, "e2e") == "UNAVAILABLE", "e2e out of routing")


def test_metrics_name_the_data_plane_and_count_its_calls(
    running: Reconciler, data_plane: str
) -> None:
    series = (
        'tei_reconciler_router_requests_total{code="OK",instance="counted",'
        'method="/tei.v1.Embed/Embed"}'
    )
    with running.api() as api:
        created = api.post(
            "/instances?wait=ready&timeout=60",
            json={"name": "counted", "model_id": "hash/8", "gpu": "none"},
        )
        assert created.status_code == 201, created.text
        assert embed(running.grpc_port, "counted") == "OK 8"

        def counted() -> bool:
            text = api.get("/metrics").text
            return (
                series in text
                and f'tei_reconciler_data_plane_up{{data_plane="{data_plane}"}} 1.0' in text
            )

        wait_until(counted, "the call in /metrics")
