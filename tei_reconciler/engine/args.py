"""`text-embeddings-router`'s flags with TEI's defaults, plus the engine's own few.

Parsing is clap-like: unknown flags and bad values exit 2, abbreviations are refused. Unlike
TEI, no flag falls back to an environment variable: TEI's names (`PORT`, `HOSTNAME`,
`MODEL_ID`, ...) are generic and leak from supervisors and containers. The one exception is
`API_KEY`, read as TEI reads it when `--api-key` is not given: it is how a key reaches a
process without showing in its command line (the reconciler passes `api_key_file` so, and
removes any `API_KEY` it inherited itself).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from tei_reconciler import __version__


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid value '{value}': expected true or false")


def _default_workers() -> int:
    return max(1, min(64, (os.cpu_count() or 2) - 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tei-reconciler engine",
        description="A TEI-compatible embedding server (text-embeddings-router flags).",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("-V", "--version", action="version", version=f"text-embeddings-router {__version__}")
    add(
        "--model-id",
        required=True,
        help="a model directory with an ONNX export, a cached Hub id, or hash/<...>",
    )
    add("--revision", help="reported as model_sha")
    add("--tokenization-workers", type=int, default=None)
    add("--dtype", choices=["float16", "float32", "bfloat16"], default=None)
    add("--served-model-name", default=None)
    add("--pooling", choices=["cls", "mean", "splade", "last-token"], default=None)
    add("--max-concurrent-requests", type=int, default=512)
    add("--max-batch-tokens", type=int, default=16384)
    add("--max-batch-requests", type=int, default=None)
    add("--max-client-batch-size", type=int, default=32)
    add("--auto-truncate", type=_bool, nargs="?", const=True, default=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--default-prompt-name", default=None)
    group.add_argument("--default-prompt", default=None)
    add("--dense-path", default=None)
    add("--hf-token", default=None)
    add("--hf-api-token", default=None, help=argparse.SUPPRESS)
    add("--hostname", default="0.0.0.0")
    add("-p", "--port", type=int, default=3000)
    add("--uds-path", default="/tmp/text-embeddings-inference-server")  # noqa: S108
    add("--huggingface-hub-cache", default=None)
    add("--payload-limit", type=int, default=2_000_000)
    add("--api-key", default=None)
    add("--json-output", action="store_true")
    add("--disable-spans", action="store_true")
    add("--otlp-endpoint", default=None)
    add("--otlp-service-name", default="text-embeddings-inference.server")
    add("--prometheus-port", type=int, default=9000)
    add("--cors-allow-origin", action="append", default=None)
    engine = parser.add_argument_group("engine options (not in TEI)")
    engine.add_argument("--http", action="store_true", help="serve TEI's HTTP API, not gRPC")
    engine.add_argument(
        "--disable-dynamic-batching",
        action="store_true",
        help="run each request on its own (for benchmarks)",
    )
    engine.add_argument(
        "--inference-threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads (default: min(4, CPUs))",
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    if args.api_key is None:
        args.api_key = os.environ.get("API_KEY") or None
    if args.tokenization_workers is None:
        args.tokenization_workers = _default_workers()
    if args.inference_threads is None:
        args.inference_threads = max(1, min(4, os.cpu_count() or 1))
    return args
