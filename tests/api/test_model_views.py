"""What a model's body says beyond the registry's status, the same in the list, on its page and
on the watch: the state file's view (declared, users), the check before start of the instances
on it, and a model the registry has not looked at yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.planner.model_status import (
    INSUFFICIENT_GPU_MEMORY,
    UNSUPPORTED_MODEL,
    ModelState,
    ModelStatus,
    Progress,
)
from tei_reconciler.planner.phase import Phase

from .harness import Api, build, observed
from .test_server import served, sse_events
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio
REFUSAL = "TEI cannot serve model_type 'gpt2' (GPT2Model); it serves bert, ..."
TOO_BIG = (
    "the model's weights need about 13.0 GiB (7000M parameters as float16) but GPU 0 has "
    "8.0 GiB free"
)


def write_state(api: Api, text: str) -> None:
    api.statefile.path.write_text(text)


async def test_a_refused_start_and_a_gpu_memory_warning_show_on_the_instances_model(
    tmp_path: Path,
) -> None:
    _, api = build(tmp_path)
    write_state(
        api,
        '[instances.refused]\nmodel_id = "acme/x"\n[instances.warned]\nmodel_id = "acme/x"\n'
        '[instances.elsewhere]\nmodel_id = "acme/y"\n',
    )
    on_x = InstanceSpec(name="refused", model_id="acme/x")
    api.store.put(
        observed(on_x, Phase.FAILED, ready=False, reason=UNSUPPORTED_MODEL, message=REFUSAL)
    )
    api.store.put(observed(InstanceSpec(name="warned", model_id="acme/x")))
    api.store.record_event("warned", "Warning", INSUFFICIENT_GPU_MEMORY, TOO_BIG, 1_700_000_000.0)
    api.store.record_event("elsewhere", "Warning", INSUFFICIENT_GPU_MEMORY, TOO_BIG, 1.0)
    async with api.client:
        body = (await api.client.get("/models/acme%2Fx")).json()
        listed = {m["model_id"]: m for m in (await api.client.get("/models")).json()}
    assert body["checks"] == [
        {
            "instance": "refused",
            "verdict": "refused",
            "reason": "UnsupportedModel",
            "message": REFUSAL,
        },
        {
            "instance": "warned",
            "verdict": "warning",
            "reason": "InsufficientGPUMemory",
            "message": TOO_BIG,
            "at": "2023-11-14T22:13:20Z",
        },
    ]
    assert listed["acme/x"]["checks"] == body["checks"]
    assert "checks" not in listed["acme/y"]  # "elsewhere" was never observed on acme/y


async def test_a_model_the_registry_has_not_looked_at_yet_is_shown_from_the_state_file(
    tmp_path: Path,
) -> None:
    _, api = build(tmp_path)
    write_state(
        api,
        '[instances.stand-in]\nmodel_id = "hash/384"\n[instances.new]\nmodel_id = "acme/new"\n'
        '[models."acme/declared"]\nrevision = "v2"\n',
    )
    async with api.client:
        listed = {m["model_id"]: m for m in (await api.client.get("/models")).json()}
    assert (listed["hash/384"]["reason"], listed["hash/384"]["used_by"]) == (
        "NotObserved",
        ["stand-in"],
    )
    assert listed["acme/new"]["reason"] == "NotObserved"
    declared = listed["acme/declared"]
    assert (declared["reason"], declared["revision"], declared["declared"]) == (
        "NotObserved",
        "v2",
        True,
    )
    assert declared["message"] == "the registry has not looked at it yet"


async def test_the_watch_shows_each_model_change_as_the_list_shows_the_model(
    tmp_path: Path,
) -> None:
    app, api = build(tmp_path)
    write_state(api, '[instances.emb]\nmodel_id = "hash/8"\n[models."acme/x"]\n')
    fetching = ModelStatus(
        model_id="acme/x",
        state=ModelState.DOWNLOADING,
        reason="Downloading",
        progress=Progress(done_bytes=512, total_bytes=2048, files_done=1, files_total=3),
    )
    headers = {"accept": "text/event-stream"}
    async with served(app) as client:
        with anyio.fail_after(DEADLINE):
            async with client.stream("GET", "/events", headers=headers) as response:
                events = sse_events(response)

                async def next_event() -> tuple[str, dict[str, Any]]:
                    event, data = await anext(events)
                    assert isinstance(data, dict)
                    return event, data

                # the current list first, as GET /models shows it
                assert await next_event() == (
                    "model",
                    (await client.get("/models/acme%2Fx")).json(),
                )
                event, first = await next_event()
                assert (event, first["model_id"], first["reason"]) == (
                    "model",
                    "hash/8",
                    "NotObserved",
                )
                # a fetch asked for through the API: the registry does not know it is declared
                api.store.put_model(fetching)
                event, data = await next_event()
                assert event == "model"
                assert data["declared"] is True
                assert data["progress"]["percent"] == 25.0
                # forgotten by the registry while declared: still a model, not observed
                api.store.forget_model("acme/x")
                event, data = await next_event()
                assert (event, data["status"], data["reason"]) == (
                    "model",
                    "available",
                    "NotObserved",
                )
                # and once it is neither declared nor used nor cached: gone
                api.store.put_model(fetching)
                assert (await next_event())[0] == "model"
                write_state(api, '[instances.emb]\nmodel_id = "hash/8"\n')
                api.store.forget_model("acme/x")
                assert await next_event() == ("model_deleted", {"model_id": "acme/x"})
