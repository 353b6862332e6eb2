"""Checks before start, from config.json variants and safetensors headers: which models TEI
refuses, what their weights weigh, when a GPU is too small; and which repo files are fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.models.checks import Verdict, check_start
from tei_reconciler.models.inspect import (
    InspectError,
    estimate_parameters,
    facts_from,
    read_facts,
    safetensors_header,
)
from tei_reconciler.models.select import Flavour, missing_weights, select_files
from tei_reconciler.models.support import TEI_MODEL_TYPES, memory_warning, tei_refusal
from tei_reconciler.planner.model_status import ModelFacts

from support.model_files import MINILM_CONFIG, as_json, safetensors, write_tree

GIB = 1024**3


@pytest.mark.parametrize(
    ("config", "on_gpu", "refusal"),
    [
        ({"model_type": "bert", "architectures": ["BertModel"]}, False, None),
        ({"model_type": "xlm-roberta"}, False, None),
        ({"model_type": "new", "architectures": ["NewModel"]}, False, None),
        ({"model_type": "qwen3"}, False, None),
        ({"model_type": "mistral"}, True, None),
        ({"model_type": "mistral"}, False, "Mistral models only on a CUDA GPU"),
        ({"model_type": "qwen2"}, False, "Qwen2 models only on a CUDA GPU"),
        (
            {"model_type": "t5", "architectures": ["T5EncoderModel"]},
            True,
            "TEI cannot serve model_type 't5' (T5EncoderModel); it serves bert,",
        ),
        ({"architectures": ["BertModel"]}, False, "config.json has no model_type"),
    ],
)
def test_tei_refuses_architectures_it_has_no_code_for(
    config: dict[str, object], on_gpu: bool, refusal: str | None
) -> None:
    reason = tei_refusal(facts_from(config), on_gpu=on_gpu)
    if refusal is None:
        assert reason is None
    else:
        assert reason is not None
        assert refusal in reason


def test_every_listed_model_type_is_served_somewhere() -> None:
    for model_type in TEI_MODEL_TYPES:
        assert tei_refusal(ModelFacts(model_type=model_type), on_gpu=True) is None


BIG = ModelFacts(model_type="mistral", parameters=7_000_000_000)


@pytest.mark.parametrize(
    ("facts", "dtype", "free", "warning"),
    [
        (BIG, None, 40 * GIB, None),
        (BIG, None, 8 * GIB, "need about 13.0 GiB (7000M parameters as float16) but GPU 0 has 8.0"),
        (BIG, "float32", 20 * GIB, "need about 26.1 GiB (7000M parameters as float32)"),
        (ModelFacts(weights_bytes=3 * GIB), None, 2 * GIB, "need about 3.0 GiB (weight files)"),
        (ModelFacts(), None, 0, None),
    ],
)
def test_the_memory_warning_compares_weights_at_the_serving_dtype_with_free_memory(
    facts: ModelFacts, dtype: str | None, free: int, warning: str | None
) -> None:
    said = memory_warning(facts, dtype=dtype, gpu=0, free_bytes=free)
    if warning is None:
        assert said is None
    else:
        assert said is not None
        assert warning in said


def test_safetensors_headers_give_the_exact_parameter_count_and_dtype(tmp_path: Path) -> None:
    tensors = {
        "embeddings": ("F16", (1000, 64)),
        "dense.weight": ("F16", (64, 64)),
        "b": ("F32", (64,)),
    }
    files = {
        "config.json": as_json(MINILM_CONFIG),
        "model.safetensors": safetensors(tensors),
        "tokenizer.json": b"{}",
    }
    facts = read_facts(write_tree(tmp_path, files))
    assert facts.parameters == 1000 * 64 + 64 * 64 + 64
    assert not facts.parameters_estimated
    assert facts.dtype == "float16"
    assert facts.model_type == "bert"
    assert facts.architecture == "BertModel"
    assert facts.hidden_size == 384
    assert facts.max_position_embeddings == 512
    assert facts.weights_bytes == len(files["model.safetensors"])
    assert facts.size_bytes == sum(len(v) for v in files.values())


def test_only_the_header_is_read_so_a_truncated_weights_file_still_inspects(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors({"w": ("BF16", (4096, 4096))}, data=False))
    assert safetensors_header(path)["w"]["shape"] == [4096, 4096]


def test_without_safetensors_the_count_is_estimated_from_the_config() -> None:
    facts = facts_from(MINILM_CONFIG)
    assert facts.parameters_estimated
    assert facts.parameters == estimate_parameters(MINILM_CONFIG)
    assert facts.parameters is not None
    assert 20_000_000 < facts.parameters < 25_000_000  # all-MiniLM-L6-v2 has 22.7M
    assert facts.dtype == "float32"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"model.safetensors": b"\x01\x00"}, "too short"),
        ({"model.safetensors": b"\x04\x00\x00\x00\x00\x00\x00\x00nope"}, "not JSON"),
        ({"model.safetensors": b"\xff" * 8}, "too large"),
    ],
)
def test_a_broken_weights_header_is_named(
    tmp_path: Path, files: dict[str, bytes], problem: str
) -> None:
    write_tree(tmp_path, {"config.json": b"{}", **files})
    with pytest.raises(InspectError, match=problem):
        read_facts(tmp_path)


REPO_FILES = [
    ".gitattributes",
    "README.md",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "2_Dense/config.json",
    "2_Dense/model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "model.safetensors",
    "pytorch_model.bin",
    "tf_model.h5",
    "onnx/model.onnx",
    "onnx/model_O4.onnx",
    "onnx/model_qint8_avx512.onnx",
    "openvino/openvino_model.xml",
]


def test_tei_gets_the_configs_and_safetensors_and_nothing_else() -> None:
    chosen = select_files(REPO_FILES, {Flavour.SAFETENSORS})
    assert "model.safetensors" in chosen
    assert "2_Dense/model.safetensors" in chosen
    assert "1_Pooling/config.json" in chosen
    for skipped in ("pytorch_model.bin", "tf_model.h5", "onnx/model.onnx", "README.md"):
        assert skipped not in chosen


def test_the_built_in_engine_gets_the_one_onnx_export_it_reads() -> None:
    chosen = select_files(REPO_FILES, {Flavour.ONNX})
    assert [f for f in chosen if "onnx" in f] == ["onnx/model.onnx"]
    assert "model.safetensors" not in chosen


def test_sharded_weights_come_with_their_index() -> None:
    files = ["config.json", "model.safetensors.index.json"] + [
        f"model-0000{i}-of-00002.safetensors" for i in (1, 2)
    ]
    assert select_files(files, {Flavour.SAFETENSORS}) == sorted(files)


@pytest.mark.parametrize(
    ("files", "flavour", "lacking"),
    [
        (["config.json", "model.safetensors"], Flavour.SAFETENSORS, None),
        (["config.json", "model.onnx", "model.onnx_data"], Flavour.ONNX, None),
        (["config.json", "pytorch_model.bin"], Flavour.ONNX, "no ONNX export"),
        (["config.json", "onnx/model.onnx"], Flavour.SAFETENSORS, "no weights TEI reads"),
        (["model.safetensors"], Flavour.SAFETENSORS, "no config.json"),
    ],
)
def test_a_repo_the_binary_cannot_serve_is_recognised_from_its_listing(
    files: list[str], flavour: Flavour, lacking: str | None
) -> None:
    said = missing_weights(files, {flavour})
    if lacking is None:
        assert said is None
    else:
        assert said is not None
        assert lacking in said


def test_the_built_in_engine_refuses_a_directory_it_cannot_serve_before_any_process(
    tmp_path: Path,
) -> None:
    write_tree(tmp_path / "m", {"config.json": as_json(MINILM_CONFIG), "onnx/model.onnx": b"x"})
    spec = InstanceSpec(name="a", model_id=str(tmp_path / "m"))
    verdict = check_start(
        spec, builtin=True, cache=tmp_path, facts=None, cuda="", free_memory=lambda _: None
    )
    assert verdict.refusal is not None
    assert "the built-in engine cannot serve it" in verdict.refusal
    assert "missing tokenizer.json" in verdict.refusal


def test_hash_models_need_no_check() -> None:
    spec = InstanceSpec(name="a", model_id="hash/384")
    verdict = check_start(
        spec, builtin=True, cache=Path("/nonexistent"), facts=None, cuda="", free_memory=lambda _: 0
    )
    assert verdict == Verdict()


@pytest.mark.parametrize(
    ("facts", "cuda", "free", "refusal", "warning"),
    [
        (ModelFacts(model_type="bert", parameters=110_000_000), "0", 8 * GIB, None, None),
        (ModelFacts(model_type="t5"), "0", 8 * GIB, "cannot serve model_type 't5'", None),
        (
            ModelFacts(model_type="qwen2", parameters=7_000_000_000),
            "",
            None,
            "only on a CUDA GPU",
            None,
        ),
        (
            ModelFacts(model_type="qwen2", parameters=7_000_000_000),
            "1,2",
            4 * GIB,
            None,
            "but GPU 1 has 4.0 GiB free",
        ),
        (ModelFacts(model_type="qwen2", parameters=7_000_000_000), "1", None, None, None),
    ],
)
def test_tei_checks_the_model_type_and_the_free_memory_of_the_first_gpu(
    facts: ModelFacts, cuda: str, free: int | None, refusal: str | None, warning: str | None
) -> None:
    asked: list[int] = []

    def free_memory(index: int) -> int | None:
        asked.append(index)
        return free

    spec = InstanceSpec(name="a", model_id="org/model")
    verdict = check_start(
        spec, builtin=False, cache=Path("/c"), facts=facts, cuda=cuda, free_memory=free_memory
    )
    for expected, said in ((refusal, verdict.refusal), (warning, verdict.warning)):
        if expected is None:
            assert said is None
        else:
            assert said is not None
            assert expected in said
    if warning is not None:
        assert asked == [1]
