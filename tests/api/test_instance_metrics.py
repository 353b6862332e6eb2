"""An instance's own Prometheus metrics, scraped through the API port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.planner.phase import Phase
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from .harness import build, make_settings, observed
from support.engines import running
from support.net import free_port
from support.waiting import wait_until

pytestmark = pytest.mark.anyio


@contextmanager
def counted_engine(host: str = "127.0.0.1") -> Iterator[int]:
    """A real engine on `host` that has served one request; yields its --prometheus-port
    once that answers."""
    with running("hash/8", host=host) as engine:

        def answers() -> bool:
            try:
                return httpx.get(engine.metrics_url).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, "the engine's metrics")
        with grpc.insecure_channel(engine.target) as channel:  # traffic to count
            tei_pb2_grpc.EmbedStub(channel).Embed(tei_pb2.EmbedRequest(inputs="x"), timeout=30)
        yield engine.prom_port


@pytest.fixture(scope="module")
def engine_metrics_port() -> Iterator[int]:
    with counted_engine() as port:
        yield port


async def test_an_instances_metrics_are_its_own_tei_metrics(
    tmp_path: Path, engine_metrics_port: int
) -> None:
    _, api = build(tmp_path)
    spec = InstanceSpec(name="emb", model_id="hash/8")
    api.statefile.add_instance("emb", {"model_id": "hash/8"})
    api.store.put(observed(spec, prometheus_port=engine_metrics_port))
    answer = await api.client.get("/instances/emb/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "te_request_count" in answer.text  # TEI's own metric names


async def test_metrics_of_an_unknown_instance_are_404(tmp_path: Path) -> None:
    _, api = build(tmp_path)
    answer = await api.client.get("/instances/ghost/metrics")
    assert (answer.status_code, answer.json()["code"]) == (404, "INSTANCE_NOT_FOUND")


async def test_metrics_of_a_stopped_instance_are_503(tmp_path: Path) -> None:
    _, api = build(tmp_path)
    spec = InstanceSpec(name="off", model_id="hash/8", state="stopped")  # type: ignore[arg-type]
    api.statefile.add_instance("off", {"model_id": "hash/8", "state": "stopped"})
    api.store.put(observed(spec, Phase.STOPPED, prometheus_port=None))
    answer = await api.client.get("/instances/off/metrics")
    assert (answer.status_code, answer.json()["code"]) == (503, "INSTANCE_NOT_RUNNING")


async def test_metrics_of_an_instance_that_does_not_answer_are_502(tmp_path: Path) -> None:
    _, api = build(tmp_path)
    spec = InstanceSpec(name="gone", model_id="hash/8")
    api.statefile.add_instance("gone", {"model_id": "hash/8"})
    api.store.put(observed(spec, prometheus_port=free_port()))  # nothing listens there
    answer = await api.client.get("/instances/gone/metrics")
    assert (answer.status_code, answer.json()["code"]) == (502, "INSTANCE_METRICS_UNAVAILABLE")


@pytest.fixture
def ipv6_engine_metrics_port() -> Iterator[int]:
    """A real engine listening on ::1 only."""
    with counted_engine("::1") as port:
        yield port


async def test_metrics_of_an_instance_on_an_ipv6_instance_host_are_scraped(
    tmp_path: Path, ipv6_engine_metrics_port: int
) -> None:
    settings = make_settings(tmp_path / "runtime", instance_host="::1")
    _, api = build(tmp_path, settings)
    spec = InstanceSpec(name="six", model_id="hash/8")
    api.statefile.add_instance("six", {"model_id": "hash/8"})
    api.store.put(observed(spec, prometheus_port=ipv6_engine_metrics_port))
    answer = await api.client.get("/instances/six/metrics")
    assert answer.status_code == 200, answer.text
    assert "te_request_count" in answer.text
