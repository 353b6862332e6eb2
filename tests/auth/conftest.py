"""Fixtures of the auth tests: one PKI per test (trustme keys are cheap)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .pki import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path)
