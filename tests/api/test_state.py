"""`/state` and `/plan`: the whole file with optimistic concurrency; no write is ever lost."""

from __future__ import annotations

import tomllib
from pathlib import Path

import anyio
import pytest

from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.desired.statefile import StateFile, revision_of

from .harness import Api, build, make_settings, observed

TOML = {"content-type": "application/toml"}
GOOD = b'# hand-written\n[instances.a]\nmodel_id = "m/x"  # keep me\n'


@pytest.mark.anyio
async def test_get_state_returns_the_file_byte_for_byte_with_its_revision(api: Api) -> None:
    api.statefile.path.write_bytes(GOOD)
    response = await api.client.get("/state")
    assert response.status_code == 200
    assert response.content == GOOD
    assert response.headers["content-type"].startswith("application/toml")
    assert response.headers["etag"] == f'"{revision_of(GOOD)}"'


@pytest.mark.anyio
async def test_put_state_with_the_current_revision_replaces_the_file(api: Api) -> None:
    api.statefile.path.write_bytes(GOOD)
    etag = (await api.client.get("/state")).headers["etag"]
    new = GOOD + b'\n[instances.b]\nmodel_id = "m/y"\n'
    response = await api.client.put("/state", content=new, headers={**TOML, "If-Match": etag})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["written"] is True
    assert body["revision"] == revision_of(new)
    assert response.headers["etag"] == f'"{revision_of(new)}"'
    assert [a["instance"] for a in body["actions"]] == ["a", "b"]
    assert api.statefile.path.read_bytes() == new
    assert api.controller.dirty == 1


@pytest.mark.anyio
async def test_put_state_with_a_stale_if_match_is_412_and_writes_nothing(api: Api) -> None:
    api.statefile.path.write_bytes(GOOD)
    stale = (await api.client.get("/state")).headers["etag"]
    edited = GOOD + b"# edited by hand meanwhile\n"
    api.statefile.path.write_bytes(edited)
    response = await api.client.put("/state", content=b"", headers={**TOML, "If-Match": stale})
    assert response.status_code == 412
    assert response.json()["code"] == "REVISION_MISMATCH"
    assert api.statefile.path.read_bytes() == edited
    dry = await api.client.put(
        "/state?dry_run=true", content=b"", headers={**TOML, "If-Match": stale}
    )
    assert dry.status_code == 412


@pytest.mark.anyio
async def test_a_dry_run_validates_and_plans_without_writing(api: Api) -> None:
    api.statefile.path.write_bytes(GOOD)
    new = b'[instances.z]\nmodel_id = "m/z"\n'
    response = await api.client.put("/state?dry_run=true", content=new, headers=TOML)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "revision": revision_of(new),
        "dry_run": True,
        "written": False,
        "actions": [{"instance": "z", "action": "start", "reason": "desired running, no process"}],
    }
    assert api.statefile.path.read_bytes() == GOOD
    assert api.controller.dirty == 0


@pytest.mark.anyio
async def test_a_dry_run_shows_the_planners_decision_for_each_instance(api: Api) -> None:
    new = (
        b'[instances.cold]\nmodel_id = "m/c"\nstate = "stopped"\n'
        b'[instances.warm]\nmodel_id = "m/w"\n'
    )
    response = await api.client.put("/state?dry_run=true", content=new, headers=TOML)
    assert response.status_code == 200
    # A stopped instance with no process needs nothing; a running one needs a start.
    assert response.json()["actions"] == [
        {"instance": "warm", "action": "start", "reason": "desired running, no process"}
    ]


@pytest.mark.anyio
async def test_an_invalid_state_is_400_with_each_problems_line_and_field(api: Api) -> None:
    bad = b'[instances.a]\nmodel_id = "m/x"\nprot = 1\n\n[instances.b]\nmodel_id = 3\n'
    for query in ("", "?dry_run=true"):
        response = await api.client.put(f"/state{query}", content=bad, headers=TOML)
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "VALIDATION_ERROR"
        located = {(d["field"], d["line"]) for d in body["details"]}
        assert ("instances.a.prot", 3) in located
        assert ("instances.b.model_id", 6) in located
    assert not api.statefile.path.exists()


@pytest.mark.anyio
async def test_invalid_toml_is_400_and_json_is_415(api: Api) -> None:
    response = await api.client.put("/state", content=b"[instances\n", headers=TOML)
    assert response.status_code == 400
    assert response.json()["details"][0]["line"] == 1
    response = await api.client.put("/state", json={"instances": {}})
    assert response.status_code == 415


@pytest.mark.anyio
async def test_the_plan_shows_what_the_controller_is_about_to_do(api: Api) -> None:
    api.statefile.path.write_bytes(GOOD)
    body = (await api.client.get("/plan")).json()
    assert body["valid"] is True
    assert body["revision"] == revision_of(GOOD)
    assert body["actions"] == [
        {"instance": "a", "action": "start", "reason": "desired running, no process"}
    ]
    assert (body["read_only"], body["read_only_reason"]) == (False, None)


@pytest.mark.anyio
async def test_with_an_invalid_file_the_plan_uses_the_last_good_state(api: Api) -> None:
    api.statefile.path.write_bytes(b"[instances.a]\nmodel_id = 5\n")
    api.store.put(observed(InstanceSpec(name="kept", model_id="m/x")))
    api.store.observed_revision = "r1"
    body = (await api.client.get("/plan")).json()
    assert body["valid"] is False
    assert body["errors"][0]["field"] == "instances.a.model_id"
    assert body["revision"] == "r1"
    assert [a["instance"] for a in body["actions"]] == ["kept"]
    listed = (await api.client.get("/instances")).json()
    assert [i["name"] for i in listed] == ["kept"]


@pytest.mark.anyio
async def test_a_hand_edit_before_an_api_write_survives_it(api: Api) -> None:
    api.statefile.path.write_bytes(GOOD)
    await api.client.get("/instances")  # the API has read (and cached) the old file
    api.statefile.path.write_bytes(GOOD + b'\n[instances.hand]\nmodel_id = "m/h"\n')
    response = await api.client.post("/instances", json={"name": "api", "model_id": "m/y"})
    assert response.status_code == 201
    text = api.statefile.path.read_text()
    assert set(tomllib.loads(text)["instances"]) == {"a", "hand", "api"}
    assert "# keep me" in text


@pytest.mark.anyio
async def test_concurrent_api_writes_and_another_writer_lose_no_update(tmp_path: Path) -> None:
    _, api = build(tmp_path, make_settings(tmp_path / "runtime", max_instances=32))
    other = StateFile(api.statefile.path)  # e.g. `tei-reconciler apply` in another process

    def hand_edits() -> None:
        for i in range(8):
            other.add_instance(f"hand-{i}", {"model_id": "m/h"})

    async def api_write(i: int) -> None:
        response = await api.client.post(
            "/instances", json={"name": f"api-{i}", "model_id": "m/a", "port": 8300 + i}
        )
        assert response.status_code == 201, response.text

    async with api.client, anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, hand_edits)
        for i in range(8):
            tg.start_soon(api_write, i)
    names = set(tomllib.loads(api.statefile.path.read_text())["instances"])
    assert names == {f"hand-{i}" for i in range(8)} | {f"api-{i}" for i in range(8)}


@pytest.mark.anyio
async def test_the_etag_of_a_put_names_what_it_wrote_even_if_a_hand_edit_follows_at_once(
    api: Api,
) -> None:
    api.statefile.path.write_bytes(GOOD)
    etag = (await api.client.get("/state")).headers["etag"]
    ours = GOOD + b'\n[instances.b]\nmodel_id = "m/y"\n'
    theirs = GOOD + b'\n[instances.c]\nmodel_id = "m/z"\n'

    def hand_edit() -> None:
        # Someone saves the file right after our write lands, before the response is built.
        api.statefile.path.write_bytes(theirs)

    api.controller.hooks.append(hand_edit)
    response = await api.client.put("/state", content=ours, headers={**TOML, "If-Match": etag})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{revision_of(ours)}"'
    assert response.json()["revision"] == revision_of(ours)
    assert [a["instance"] for a in response.json()["actions"]] == ["a", "b"]
    # So a follow-up conditional write on that ETag is refused instead of erasing their edit.
    api.controller.hooks.clear()
    again = ours + b"# more\n"
    stale = await api.client.put(
        "/state", content=again, headers={**TOML, "If-Match": response.headers["etag"]}
    )
    assert stale.status_code == 412
    assert api.statefile.path.read_bytes() == theirs
