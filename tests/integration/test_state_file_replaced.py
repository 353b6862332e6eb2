"""A state file replaced by a directory stops nothing and answers clearly, never with a 500."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .reconciler_harness import fast_settings, instance_toml, passes, reconciler
from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_a_directory_in_place_of_the_state_file_is_a_clear_error_and_stops_nothing(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path)
    async with (
        reconciler(settings, instance_toml("alpha"), with_front_ends=True) as h,
        h.api() as api,
    ):
        before = await h.ready("alpha")
        h.state_file.unlink()
        h.state_file.mkdir()
        (error,) = await eventually(lambda: h.store.spec_errors, what="the error reported")
        assert error == f"{h.state_file} is a directory, not a state file"
        await passes(h.controller, 2)

        state = await api.get("/state")
        created = await api.post("/instances", json={"name": "beta", "model_id": "hash/8"})
        for response in (state, created):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "STATE_FILE_UNAVAILABLE"
            assert "is a directory, not a state file" in response.json()["error"]
        listed = await api.get("/instances")
        assert [i["name"] for i in listed.json()] == ["alpha"]
        plan = (await api.get("/plan")).json()
        assert plan["valid"] is False
        assert "is a directory" in str(plan["errors"])
        status = h.status("alpha")
        assert status is not None
        assert (status.pid, status.ready) == (before.pid, True)

        shutil.rmtree(h.state_file)
        h.state_file.write_text(instance_toml("alpha"))
        await eventually(lambda: not h.store.spec_errors, what="the file back")
        assert (await api.get("/state")).status_code == 200
