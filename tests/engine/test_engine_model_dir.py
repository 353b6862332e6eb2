"""The built-in engine serves any sentence-transformers ONNX model directory, by path or from
the Hugging Face cache, with its own pooling and prompts; a layout it cannot serve fails at
start with one line naming what is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.engines import Engine, run_engine, running
from support.model_files import MINILM_ID, minilm_files, write_cached, write_tree
from support.net import free_port

pytestmark = pytest.mark.slow
TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market crashed today.",
    "Ünïcödé and a rather longer sentence that spans quite a few word pieces in the vocabulary.",
]
COMMIT = "a" * 40


def embed(
    engine: Engine, text: str, *, normalize: bool = True, prompt_name: str | None = None
) -> list[float]:
    request = tei_pb2.EmbedRequest(inputs=text, normalize=normalize, prompt_name=prompt_name)
    with grpc.insecure_channel(engine.target) as channel:
        return list(tei_pb2_grpc.EmbedStub(channel).Embed(request).embeddings)


def max_input_length(engine: Engine) -> int:
    with grpc.insecure_channel(engine.target) as channel:
        return int(tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest()).max_input_length)


@pytest.fixture(scope="module")
def packaged() -> Iterator[Engine]:
    with running(MINILM_ID, "--inference-threads", "1") as engine:
        yield engine


def test_a_plain_model_directory_gives_the_packaged_models_embeddings(
    packaged: Engine, tmp_path: Path
) -> None:
    root = write_tree(tmp_path / "minilm", minilm_files())
    with running(str(root), "--inference-threads", "1") as by_path:
        assert max_input_length(by_path) == 256
        for text in TEXTS:
            expected = embed(packaged, text)
            got = embed(by_path, text)
            assert len(got) == 384
            assert got == pytest.approx(expected, abs=1e-6)
            raw = embed(by_path, text, normalize=False)
            assert raw == pytest.approx(embed(packaged, text, normalize=False), abs=1e-5)


def test_a_cached_model_is_served_by_its_hub_id_with_its_pooling_and_prompts(
    packaged: Engine, tmp_path: Path
) -> None:
    cls_pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True}
    files = minilm_files(pooling=cls_pooling)
    files["config_sentence_transformers.json"] = json.dumps(
        {"prompts": {"query": "query: "}}
    ).encode()
    write_cached(tmp_path / "hub", "acme/minilm-cls", files, COMMIT)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    with running("acme/minilm-cls", "--inference-threads", "1", env=env) as cached:
        text = TEXTS[0]
        cls_vector = embed(cached, text)
        mean_vector = embed(packaged, text)
        assert len(cls_vector) == 384
        assert sum(a * b for a, b in zip(cls_vector, mean_vector, strict=True)) < 0.99
        prompted = embed(cached, text, prompt_name="query")
        assert prompted == pytest.approx(embed(cached, "query: " + text), abs=1e-6)


def test_a_directory_without_its_tokenizer_fails_at_start_with_one_line_naming_it(
    tmp_path: Path,
) -> None:
    files = minilm_files()
    del files["tokenizer.json"]
    root = write_tree(tmp_path / "broken", files)
    done = run_engine("--model-id", str(root), "--port", str(free_port()))
    assert done.returncode == 1
    error = done.stderr.strip()
    assert "\n" not in error
    assert error.startswith(f"Error: {root}: missing tokenizer.json;")


def test_a_model_neither_on_disk_nor_cached_names_the_cache_and_the_pull_command(
    tmp_path: Path,
) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "empty")}
    done = run_engine("--model-id", "acme/absent", "--port", str(free_port()), env=env)
    assert done.returncode == 1
    assert f"is not in the Hugging Face cache ({tmp_path / 'empty'})" in done.stderr
    assert "tei-reconciler models pull acme/absent" in done.stderr
