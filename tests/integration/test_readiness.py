"""`/ready` means "this pod can take traffic": an invalid state file committed later is
reported everywhere, but never takes the pod out of its Service."""

from __future__ import annotations

from pathlib import Path

import pytest

from .reconciler_harness import (
    fast_settings,
    instance_toml,
    passes,
    reconciler,
    write_atomic,
)
from support.waiting import eventually

pytestmark = pytest.mark.anyio


def metric(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


async def test_an_invalid_file_after_a_good_one_keeps_the_pod_ready_and_says_why(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path)
    async with (
        reconciler(settings, instance_toml("alpha"), with_front_ends=True) as h,
        h.api() as api,
    ):
        await h.ready("alpha")
        good = (await api.get("/ready")).json()
        assert (good["status"], good["spec_valid"], good["warnings"]) == ("ready", True, [])

        write_atomic(h.state_file, instance_toml("alpha") + "[instances.beta]\nmodel_id = 7\n")
        await eventually(lambda: h.store.spec_errors, what="the error to be reported")
        ready = await api.get("/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert (body["status"], body["spec_valid"], body["revision"]) == (
            "ready",
            False,
            good["revision"],
        )
        (warning,) = body["warnings"]
        assert "the state file is invalid (1 problem)" in warning
        assert "the last good state stays in force" in warning

        plan = (await api.get("/plan")).json()
        assert plan["valid"] is False
        assert "instances.beta.model_id" in str(plan["errors"])
        alpha = (await api.get("/instances/alpha")).json()
        assert alpha["ready"] is True
        conditions = {c["type"]: c["status"] for c in alpha["conditions"]}
        assert conditions["SpecValid"] == "False"
        events = (await api.get("/events")).json()
        assert any(e["reason"] == "InvalidSpec" for e in events)
        assert metric((await api.get("/metrics")).text, "tei_reconciler_spec_valid") == 0

        write_atomic(h.state_file, instance_toml("alpha"))
        await eventually(lambda: not h.store.spec_errors, what="the file valid again")
        again = (await api.get("/ready")).json()
        assert (again["spec_valid"], again["warnings"]) == (True, [])


async def test_a_pod_whose_first_file_is_invalid_is_not_ready_and_says_why(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path)
    async with (
        reconciler(settings, "[instances.alpha]\nmodel_id = 7\n", with_front_ends=True) as h,
        h.api() as api,
    ):
        await passes(h.controller, 1)
        ready = await api.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["code"] == "NOT_READY"
        assert ready.json()["error"] == (
            "no valid state file has been read yet (1 problem; GET /plan lists them)"
        )
