"""Compatibility with the independent PyPI client `tei-client` (run in a child process)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.engines import running
from support.waiting import DEADLINE

# find_spec, not importorskip: importing tei_client here would clash with the project's stubs
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tei_client") is None, reason="tei-client is not installed"
)
PROBE = Path(__file__).with_name("tei_client_probe.py")


def probe(mode: str, address: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(PROBE), mode, address],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_tei_client_grpc_embeds_tokenizes_and_decodes() -> None:
    with running("hash/16") as engine:
        got = probe("grpc_embedding", engine.target)
    assert got["model_type"] == "embedding"
    assert got["dims"] == [16, 16, 16]
    assert got["distinct"] == 3
    assert got["embed_all"] == [4]
    # tei-client's stubs predate `optional` offsets, so special tokens read back as 0..0
    assert got["tokens"] == [["[CLS]", 0, 0], ["h", 0, 1], ["é", 1, 3], ["[SEP]", 0, 0]]
    assert got["decode"] == "hé"
    assert got["prompt_names"] == []


def test_tei_client_grpc_classifies_singles_and_pairs() -> None:
    with running("hash/classifier") as engine:
        got = probe("grpc_classifier", engine.target)
    assert [sorted(labels) for labels in got["labels"]] == [["negative", "positive"]] * 2


def test_tei_client_grpc_reranks() -> None:
    with running("hash/reranker") as engine:
        got = probe("grpc_reranker", engine.target)
    assert got["ranks"][0] == [1, "a man eating"]


def test_tei_client_http_embeds_and_reads_info() -> None:
    with running("hash/16", http=True) as engine:
        got = probe("http_embedding", engine.url)
    assert got == {"health": True, "model_type": "embedding", "dims": [16, 16], "decode": ["a"]}
