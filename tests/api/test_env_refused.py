"""`POST /instances` refuses an `env` that would run code in the child, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.desired.unsafe_env import UNSAFE_ENV

from .harness import build

#: One variable of each refused family: its first name, else a name under its first prefix.
ONE_PER_FAMILY = [
    min(family.names) if family.names else f"{family.prefixes[0]}X" for family in UNSAFE_ENV
]


@pytest.mark.anyio
@pytest.mark.parametrize("name", ONE_PER_FAMILY)
async def test_the_api_refuses_each_family_with_400_and_writes_nothing(
    tmp_path: Path, name: str
) -> None:
    _, api = build(tmp_path)
    async with api.client:
        response = await api.client.post(
            "/instances", json={"name": "evil", "model_id": "org/m", "env": {name: "/tmp/x"}}
        )
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "VALIDATION_ERROR"
        assert f"env may not set {name}: " in str(body["details"])
        assert api.file_text() == ""
        assert api.controller.dirty == 0
