"""Which directories the built-in engine accepts, and the one line it gives for the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tei_reconciler.engine.layout import locate, read_layout, snapshot_dir
from tei_reconciler.engine.types import StartupError

from support.model_files import MINILM_CONFIG, MODULES, as_json, write_cached, write_tree

MEAN = {"pooling_mode_mean_tokens": True}


def model(**overrides: object) -> dict[str, bytes]:
    files = {
        "onnx/model.onnx": b"onnx",
        "tokenizer.json": b"{}",
        "config.json": as_json(MINILM_CONFIG),
        "1_Pooling/config.json": as_json(MEAN),
    }
    for name, content in overrides.items():
        key = name.replace("__", "/").replace("_DOT_", ".")
        if content is None:
            files.pop(key, None)
        else:
            files[key] = content if isinstance(content, bytes) else as_json(content)
    return files


def error_of(root: Path, **kwargs: str | None) -> str:
    with pytest.raises(StartupError) as caught:
        read_layout(root, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_empty_directory_names_every_missing_file_at_once(tmp_path: Path) -> None:
    message = error_of(tmp_path)
    for name in ("onnx/model.onnx (or model.onnx)", "tokenizer.json", "config.json"):
        assert name in message
    assert "1_Pooling/config.json (or --pooling)" in message


def test_the_pooling_flag_stands_in_for_a_missing_pooling_config(tmp_path: Path) -> None:
    root = write_tree(tmp_path, model(**{"1_Pooling__config_DOT_json": None}))
    assert read_layout(root, pooling="cls").pooling == "cls"
    assert "1_Pooling/config.json" in error_of(root)


def test_an_onnx_file_at_the_top_level_is_found_too(tmp_path: Path) -> None:
    files = model(onnx__model_DOT_onnx=None, model_DOT_onnx=b"onnx")
    assert read_layout(write_tree(tmp_path, files)).onnx == tmp_path / "model.onnx"


@pytest.mark.parametrize(
    ("pooling_config", "expected"),
    [
        ({"pooling_mode_cls_token": True}, "cls"),
        ({"pooling_mode_mean_tokens": True}, "mean"),
        ({"pooling_mode_lasttoken": True}, "last-token"),
    ],
)
def test_the_pooling_config_picks_the_pooling(
    tmp_path: Path, pooling_config: dict[str, bool], expected: str
) -> None:
    root = write_tree(tmp_path, model(**{"1_Pooling__config_DOT_json": pooling_config}))
    assert read_layout(root).pooling == expected


def test_a_pooling_mode_tei_has_not_is_refused_by_name(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path, model(**{"1_Pooling__config_DOT_json": {"pooling_mode_max_tokens": True}})
    )
    assert "pooling max_tokens is not supported" in error_of(root)


def test_the_pooling_folder_is_the_one_modules_json_names(tmp_path: Path) -> None:
    modules = [{"idx": 1, "path": "pool", "type": "sentence_transformers.models.Pooling"}]
    files = model(modules_DOT_json=modules, **{"1_Pooling__config_DOT_json": None})
    files["pool/config.json"] = as_json({"pooling_mode_cls_token": True})
    assert read_layout(write_tree(tmp_path, files)).pooling == "cls"


def test_splade_pooling_is_refused_with_the_reason(tmp_path: Path) -> None:
    assert "splade needs a masked-LM head" in error_of(
        write_tree(tmp_path, model()), pooling="splade"
    )


def test_a_dense_module_is_refused_rather_than_silently_skipped(tmp_path: Path) -> None:
    modules = [
        *MODULES,
        {"idx": 3, "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    root = write_tree(tmp_path, model(modules_DOT_json=modules))
    assert "has a Dense module (2_Dense)" in error_of(root)


def test_a_classifier_head_is_refused(tmp_path: Path) -> None:
    config = {**MINILM_CONFIG, "architectures": ["BertForSequenceClassification"]}
    root = write_tree(tmp_path, model(config_DOT_json=config))
    assert "BertForSequenceClassification is a classifier" in error_of(root)


def test_a_broken_config_json_is_named_with_the_parse_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, model(config_DOT_json=b"{not json"))
    assert error_of(root).startswith(f"{root / 'config.json'}: not valid JSON")


@pytest.mark.parametrize(
    ("config", "st_config", "expected"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512}, None, 512),
        ({"model_type": "bert", "max_position_embeddings": 512}, {"max_seq_length": 128}, 128),
        (
            {"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1},
            None,
            512,
        ),
        ({"model_type": "roberta", "max_position_embeddings": 514}, None, 513),
        ({"model_type": "gpt2", "n_positions": 1024}, None, 1024),
    ],
)
def test_the_max_input_length_follows_teis_rules(
    tmp_path: Path, config: dict[str, object], st_config: dict[str, int] | None, expected: int
) -> None:
    files = model(config_DOT_json=config)
    if st_config is not None:
        files["sentence_bert_config.json"] = as_json(st_config)
    assert read_layout(write_tree(tmp_path, files)).max_input_length == expected


def test_prompts_and_the_normalize_module_are_read(tmp_path: Path) -> None:
    files = model(modules_DOT_json=MODULES)
    files["config_sentence_transformers.json"] = json.dumps({"prompts": {"q": "query: "}}).encode()
    layout = read_layout(write_tree(tmp_path, files))
    assert layout.prompts == {"q": "query: "}
    assert layout.normalize


def test_a_cached_model_resolves_by_branch_and_by_commit(tmp_path: Path) -> None:
    commit = "b" * 40
    snapshot = write_cached(tmp_path, "org/name", model(), commit)
    assert snapshot_dir("org/name", None, tmp_path) == snapshot
    assert snapshot_dir("org/name", commit, tmp_path) == snapshot
    assert snapshot_dir("org/name", "v2", tmp_path) is None
    assert locate("org/name", None, str(tmp_path)) == snapshot


def test_a_missing_local_path_is_not_looked_up_in_the_cache(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="is not a directory"):
        locate(str(tmp_path / "nope"), None, str(tmp_path))
