"""The whole path of a model, with real parts: the reconciler fetches it from a local Hub
through huggingface_hub while the instance waits (Pending, Downloading, with progress) and no
TEI child exists; once the model is complete the built-in engine serves the fetched ONNX export
and answers with the packaged model's own vectors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import grpc
import pytest

from tei_reconciler.control.controller import Controller
from tei_reconciler.planner.model_status import ModelState
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from .reconciler_harness import fast_settings, instance_toml, reconciler
from support.engines import running
from support.hub import Hub, serving
from support.model_files import MINILM_ID, minilm_files
from support.processes import children
from support.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
REPO = "acme/minilm-onnx"
TEXT = "A man is eating food."


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving() as running_hub:
        running_hub.add(REPO, minilm_files())
        yield running_hub


def embed(port: int, text: str) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = tei_pb2_grpc.EmbedStub(channel).Embed(tei_pb2.EmbedRequest(inputs=text))
        return list(reply.embeddings)


async def test_an_instance_waits_for_its_model_then_serves_what_was_fetched(
    hub: Hub, tmp_path: Path
) -> None:
    weights = hub.fault(REPO, "onnx/model.onnx")
    weights.gate, weights.gate_at = threading.Event(), 1024 * 1024
    settings = fast_settings(tmp_path, hf_offline=False, hf_endpoint=hub.url)
    owner = Controller.owner_of(settings)
    async with reconciler(settings, instance_toml("emb", REPO)) as h:

        def downloading() -> InstanceStatus | None:
            status = h.status("emb")
            # three configs are in; the weights (fourth in name order) wait on the Hub's gate
            ok = status is not None and "3 of 6 files" in status.message
            return status if ok else None

        waiting: InstanceStatus = await eventually(downloading, what="emb Pending, Downloading")
        assert waiting.phase.value == "Pending"
        assert waiting.reason == "Downloading"
        assert "(0%)" in waiting.message  # a few KiB of configs out of 22 MiB
        assert waiting.pid is None
        assert children(owner, "emb") == []
        model = h.store.model(REPO)
        assert model is not None
        assert model.state is ModelState.DOWNLOADING
        assert model.used_by == ("emb",)
        weights.gate.set()
        ready = await h.ready("emb")
        assert ready.port is not None
        served = await anyio.to_thread.run_sync(embed, ready.port, TEXT)
        assert [e.reason for e in h.store.model_events(REPO)] == ["Downloaded"]
        started = [e for e in h.store.events("emb") if e.reason == "Started"]
        assert started[0].first_time >= h.store.model_events(REPO)[0].first_time
    with running(MINILM_ID, "--inference-threads", "1") as packaged:
        expected = await anyio.to_thread.run_sync(embed, packaged.port, TEXT)
    assert served == pytest.approx(expected, abs=1e-6)
    cache = tmp_path / "hub" / "models--acme--minilm-onnx"
    assert (cache / "refs" / "main").read_text() == "c" * 40


async def test_a_model_that_cannot_be_fetched_fails_the_instance_without_starting_it(
    hub: Hub, tmp_path: Path
) -> None:
    settings = fast_settings(tmp_path, hf_offline=False, hf_endpoint=hub.url)
    async with reconciler(settings, instance_toml("typo", "acme/no-such-model")) as h:
        failed = await h.phase_is("typo", "Failed")
        assert failed.reason == "RepoNotFound"
        assert f"no model acme/no-such-model on {hub.url}" in failed.message
        assert children(Controller.owner_of(settings), "typo") == []
        assert any(e.reason == "ModelUnavailable" for e in h.store.events("typo"))


async def test_a_model_the_built_in_engine_cannot_serve_is_refused_before_any_process(
    tmp_path: Path,
) -> None:
    files = minilm_files()
    del files["1_Pooling/config.json"]
    root = tmp_path / "no-pooling"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    settings = fast_settings(tmp_path)
    async with reconciler(settings, instance_toml("bare", str(root))) as h:
        failed = await h.phase_is("bare", "Failed")
        assert failed.reason == "UnsupportedModel"
        assert "missing 1_Pooling/config.json (or --pooling)" in failed.message
        assert children(Controller.owner_of(settings), "bare") == []
