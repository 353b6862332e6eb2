"""Can this binary serve this model, and will its weights fit? Pure: facts in, reasons out.

TEI picks its model code from `config.json`'s `model_type` (its candle backend deserializes
the config by that tag and refuses the rest with "Model is not supported"); some types run
only on CUDA in fp16 with flash attention. `TEI_MODEL_TYPES` is that list, kept here and
nowhere else. The built-in engine's own capabilities are checked by the engine's layout
reader (`tei_reconciler.engine.layout`), not here.

The memory check compares the weights' size at the dtype TEI will load (the instance's
`dtype`, else float16 on a GPU) with the free memory of the instance's first GPU (TEI runs on
one device). It is a warning, never a refusal: activations and other processes make the
number an estimate.
"""

from __future__ import annotations

import msgspec

from tei_reconciler.planner.model_status import ModelFacts


class TeiSupport(msgspec.Struct, frozen=True, kw_only=True):
    """How TEI serves one `model_type`."""

    name: str  # what TEI's docs call it
    cuda_only: bool = False  # only on CUDA, fp16, flash attention (refused on a CPU instance)


#: `config.json` `model_type` -> how TEI serves it (text-embeddings-inference candle backend).
TEI_MODEL_TYPES: dict[str, TeiSupport] = {
    "bert": TeiSupport(name="BERT (also JinaBERT)"),
    "camembert": TeiSupport(name="CamemBERT"),
    "roberta": TeiSupport(name="RoBERTa"),
    "xlm-roberta": TeiSupport(name="XLM-RoBERTa"),
    "distilbert": TeiSupport(name="DistilBERT"),
    "deberta-v2": TeiSupport(name="DeBERTa-v2"),
    "mpnet": TeiSupport(name="MPNet"),
    "modernbert": TeiSupport(name="ModernBERT"),
    "nomic_bert": TeiSupport(name="Nomic BERT"),
    "new": TeiSupport(name="Alibaba GTE"),
    "gte": TeiSupport(name="Alibaba GTE"),
    "gemma3_text": TeiSupport(name="Gemma3"),
    "qwen3": TeiSupport(name="Qwen3"),
    "bidirectional_pplx_qwen3": TeiSupport(name="pplx Qwen3"),
    "mistral": TeiSupport(name="Mistral", cuda_only=True),
    "qwen2": TeiSupport(name="Qwen2", cuda_only=True),
    "llama": TeiSupport(name="Llama", cuda_only=True),
    "llama_bidirec": TeiSupport(name="Llama (bidirectional)", cuda_only=True),
}

#: Bytes per parameter for each dtype name TEI or safetensors uses.
DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
    "uint8": 1,
    "float64": 8,
}

GIB = 1024**3


def tei_refusal(facts: ModelFacts, *, on_gpu: bool) -> str | None:
    """Why TEI cannot serve this model on this instance, or None when it can."""
    if facts.model_type is None:
        return "config.json has no model_type, so TEI cannot tell which model code to run"
    support = TEI_MODEL_TYPES.get(facts.model_type)
    arch = f" ({facts.architecture})" if facts.architecture else ""
    if support is None:
        known = ", ".join(sorted(TEI_MODEL_TYPES))
        return f"TEI cannot serve model_type {facts.model_type!r}{arch}; it serves {known}"
    if support.cuda_only and not on_gpu:
        return (
            f"TEI serves {support.name} models only on a CUDA GPU in float16 with flash "
            "attention; this instance has no GPU"
        )
    return None


def serving_dtype(facts: ModelFacts, dtype: str | None, *, on_gpu: bool) -> str:
    """The dtype TEI loads the weights as: the instance's, else float16 on a GPU, else float32."""
    if dtype is not None:
        return dtype
    return "float16" if on_gpu else "float32"


def weights_bytes(facts: ModelFacts, dtype: str) -> int | None:
    """Estimated size of the weights in memory at `dtype` (None when nothing is known)."""
    if facts.parameters is not None:
        return facts.parameters * DTYPE_BYTES.get(dtype, 2)
    return facts.weights_bytes


def memory_warning(
    facts: ModelFacts, *, dtype: str | None, gpu: int, free_bytes: int
) -> str | None:
    """A warning when the weights alone need more than GPU `gpu` has free, else None."""
    wanted_dtype = serving_dtype(facts, dtype, on_gpu=True)
    need = weights_bytes(facts, wanted_dtype)
    if need is None or need <= free_bytes:
        return None
    what = (
        f"{facts.parameters / 1e6:.0f}M parameters as {wanted_dtype}"
        if facts.parameters is not None
        else "weight files"
    )
    return (
        f"the model's weights need about {need / GIB:.1f} GiB ({what}) but GPU {gpu} has "
        f"{free_bytes / GIB:.1f} GiB free"
    )
