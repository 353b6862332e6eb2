"""`/instances`: tei-manager's requests and answers, as edits of the real state file."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest

from tei_reconciler.api.schemas import CreateInstanceRequest
from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.status import Condition, ExitInfo

from .harness import Api, build, make_settings, observed

ANCHOR_KEYS = {
    "name",
    "model_id",
    "port",
    "status",
    "pid",
    "created_at",
    "uptime_secs",
    "restarts",
    "health_check_failures",
    "last_health_check",
    "gpu_id",
    "prometheus_port",
}


def instances_in_file(api: Api) -> dict[str, dict[str, object]]:
    text = api.file_text()
    return tomllib.loads(text).get("instances", {}) if text else {}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["timestamp"], str)
    return body


@pytest.mark.anyio
async def test_a_tei_manager_create_request_adds_the_instance_to_the_state_file(api: Api) -> None:
    request = {
        "name": "bge",
        "model_id": "BAAI/bge-small-en-v1.5",
        "port": 8081,
        "gpu_id": 1,
        "max_batch_tokens": 8192,
        "max_concurrent_requests": 64,
        "pooling": "cls",
        "prometheus_port": 9150,
        "extra_args": ["--disable-spans"],
    }
    response = await api.client.post("/instances", json=request)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body.keys() >= ANCHOR_KEYS
    assert body["name"] == "bge"
    assert body["status"] == "starting"
    assert body["phase"] == "Pending"
    assert body["ready"] is False
    assert body["gpu_id"] == 1
    assert body["port"] == 8081
    assert body["events"] == "/instances/bge/events"
    table = instances_in_file(api)["bge"]
    assert table["gpu"] == 1
    assert "gpu_id" not in table
    assert table["max_batch_tokens"] == 8192
    assert table["extra_args"] == ["--disable-spans"]
    assert api.controller.dirty == 1


@pytest.mark.anyio
async def test_port_zero_asks_for_an_automatic_port(api: Api) -> None:
    response = await api.client.post(
        "/instances", json={"name": "a", "model_id": "hash/8", "port": 0, "prometheus_port": 0}
    )
    assert response.status_code == 201
    assert "port" not in instances_in_file(api)["a"]


@pytest.mark.anyio
async def test_creating_an_existing_name_is_409_instance_exists(api: Api) -> None:
    body = {"name": "a", "model_id": "hash/8"}
    assert (await api.client.post("/instances", json=body)).status_code == 201
    assert_error(await api.client.post("/instances", json=body), 409, "INSTANCE_EXISTS")


@pytest.mark.anyio
async def test_a_port_another_instance_uses_is_409_port_conflict(api: Api) -> None:
    first = {"name": "a", "model_id": "hash/8", "port": 8085}
    assert (await api.client.post("/instances", json=first)).status_code == 201
    second = {"name": "b", "model_id": "hash/8", "port": 8085}
    assert_error(await api.client.post("/instances", json=second), 409, "PORT_CONFLICT")
    assert set(instances_in_file(api)) == {"a"}


@pytest.mark.anyio
async def test_the_managers_own_api_port_is_409_port_conflict(api: Api) -> None:
    body = {"name": "a", "model_id": "hash/8", "port": 9000}
    assert_error(await api.client.post("/instances", json=body), 409, "PORT_CONFLICT")


@pytest.mark.anyio
async def test_creating_past_max_instances_is_422(tmp_path: Path) -> None:
    _, api = build(tmp_path, make_settings(tmp_path / "runtime", max_instances=2))
    async with api.client:
        for name in ("a", "b"):
            response = await api.client.post("/instances", json={"name": name, "model_id": "m/x"})
            assert response.status_code == 201
        response = await api.client.post("/instances", json={"name": "c", "model_id": "m/x"})
        assert_error(response, 422, "MAX_INSTANCES_REACHED")
        assert set(instances_in_file(api)) == {"a", "b"}


@pytest.mark.anyio
async def test_an_automatic_port_with_the_range_used_up_is_422(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "runtime", instance_port_range=(8080, 8082))
    _, api = build(tmp_path, settings)
    async with api.client:
        pinned = {"name": "a", "model_id": "m/x", "port": 8080}
        assert (await api.client.post("/instances", json=pinned)).status_code == 201
        auto = {"name": "b", "model_id": "m/x"}
        assert (await api.client.post("/instances", json=auto)).status_code == 201
        response = await api.client.post("/instances", json={"name": "c", "model_id": "m/x"})
        assert_error(response, 422, "PORT_ALLOCATION_FAILED")
        outside = {"name": "c", "model_id": "m/x", "port": 8300}
        assert (await api.client.post("/instances", json=outside)).status_code == 201


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["../x", "a/b", "", "a" * 64, "ünï", "UPPER", "-a", "a_b"])
async def test_a_name_that_is_not_a_dns_label_is_400_and_nothing_is_written(
    api: Api, name: str
) -> None:
    response = await api.client.post("/instances", json={"name": name, "model_id": "m/x"})
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["details"] == [{"field": "name", "message": body["details"][0]["message"]}] or (  # type: ignore[index]
        body["details"][0]["field"] == "name"  # type: ignore[index]
    )
    assert not api.statefile.path.exists()
    assert api.controller.dirty == 0


@pytest.mark.anyio
async def test_a_63_character_name_is_accepted(api: Api) -> None:
    response = await api.client.post("/instances", json={"name": "a" * 63, "model_id": "m/x"})
    assert response.status_code == 201


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a", "model_id": "m/x", "prot": 1}, "prot"),
        ({"name": "a"}, "model_id"),
        ({"name": "a", "model_id": "m/x", "port": "80"}, "port"),
        ({"name": "a", "model_id": "m/x", "port": 70000}, "port"),
        ({"name": "a", "model_id": "m/x", "gpu_id": -1}, "gpu_id"),
        ({"name": "a", "model_id": "m/x", "pooling": "max"}, "pooling"),
    ],
)
async def test_a_body_that_does_not_fit_the_schema_is_400_naming_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    response = await api.client.post("/instances", json=body)
    details = assert_error(response, 400, "VALIDATION_ERROR")["details"]
    assert isinstance(details, list)
    assert field in details[0]["field"] or field in details[0]["message"]


@pytest.mark.anyio
async def test_a_value_the_state_file_rejects_is_400_with_the_request_field(api: Api) -> None:
    body = {"name": "a", "model_id": "m/x", "port": 80}
    details = assert_error(await api.client.post("/instances", json=body), 400, "VALIDATION_ERROR")
    assert details["details"][0]["field"] == "port"  # type: ignore[index]
    assert not api.statefile.path.exists()


@pytest.mark.anyio
async def test_malformed_json_is_400_in_the_json_envelope(api: Api) -> None:
    response = await api.client.post(
        "/instances", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "VALIDATION_ERROR")


@pytest.mark.anyio
async def test_a_body_that_is_not_json_is_415(api: Api) -> None:
    response = await api.client.post(
        "/instances", content=b"name=a", headers={"content-type": "text/plain"}
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.anyio
async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    big = {"name": "a", "model_id": "m/x", "extra_args": ["x" * (1024 * 1024)]}
    assert_error(await api.client.post("/instances", json=big), 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> AsyncIterator[
        bytes
    ]:  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b" " * 65536

    response = await api.client.post(
        "/instances", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.anyio
async def test_an_unknown_instance_is_404_instance_not_found(api: Api) -> None:
    for method, path in [
        ("GET", "/instances/nope"),
        ("DELETE", "/instances/nope"),
        ("POST", "/instances/nope/start"),
        ("POST", "/instances/nope/stop"),
        ("POST", "/instances/nope/restart"),
        ("GET", "/instances/nope/logs"),
        ("GET", "/instances/nope/events"),
    ]:
        response = await api.client.request(method, path)
        assert_error(response, 404, "INSTANCE_NOT_FOUND")


@pytest.mark.anyio
async def test_unknown_routes_and_methods_answer_in_the_json_envelope(api: Api) -> None:
    assert_error(await api.client.get("/nowhere"), 404, "NOT_FOUND")
    response = await api.client.patch("/instances/a")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["allow"]


@pytest.mark.anyio
async def test_an_instance_shows_what_the_controller_observed(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x", "gpu_id": 0})
    spec = api.statefile.load().instances["a"]
    api.store.put(
        observed(
            spec,
            restarts=2,
            health_check_failures=1,
            last_health_check=1_700_000_100.0,
            last_exit=ExitInfo(code=1, signal=None, at=1_699_999_000.0, reason="Error"),
            conditions=(
                Condition(
                    type="Ready",
                    status="True",
                    reason="ProbeSucceeded",
                    message="",
                    last_transition_time=1_700_000_001.0,
                ),
            ),
        )
    )
    body = (await api.client.get("/instances/a")).json()
    assert body["status"] == "running"
    assert body["phase"] == "Running"
    assert body["ready"] is True
    assert body["pid"] == 4242
    assert body["port"] == 8080
    assert body["restarts"] == 2
    assert body["health_check_failures"] == 1
    assert body["created_at"].startswith("2023-11-14T22:13:20")
    assert body["uptime_secs"] > 0
    assert body["last_exit"]["code"] == 1
    assert body["conditions"][0]["type"] == "Ready"
    assert body["spec"]["model_id"] == "m/x"


@pytest.mark.anyio
async def test_the_list_holds_file_instances_and_ones_still_being_removed(api: Api) -> None:
    for name in ("b", "a"):
        await api.client.post("/instances", json={"name": name, "model_id": "m/x"})
    leaving = InstanceSpec(name="old", model_id="m/y")
    api.store.put(observed(leaving, Phase.STOPPING, pid=77))
    body = (await api.client.get("/instances")).json()
    assert [i["name"] for i in body] == ["a", "b", "old"]
    assert [i["phase"] for i in body] == ["Pending", "Pending", "Stopping"]
    assert body[2]["status"] == "stopping"
    assert body[2]["desired_state"] == "stopped"


@pytest.mark.anyio
async def test_delete_is_204_and_removes_the_table(api: Api) -> None:
    for name in ("a", "b"):
        await api.client.post("/instances", json={"name": name, "model_id": "m/x"})
    response = await api.client.delete("/instances/a")
    assert response.status_code == 204
    assert response.content == b""
    assert set(instances_in_file(api)) == {"b"}
    assert_error(await api.client.get("/instances/a"), 404, "INSTANCE_NOT_FOUND")


@pytest.mark.anyio
async def test_deleting_the_last_instance_leaves_no_instances(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    assert (await api.client.delete("/instances/a")).status_code == 204
    assert instances_in_file(api) == {}
    assert (await api.client.get("/instances")).json() == []


@pytest.mark.anyio
async def test_stop_and_start_edit_the_desired_state_and_are_idempotent(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    for _ in range(2):
        response = await api.client.post("/instances/a/stop")
        assert response.status_code == 200
        assert response.json()["desired_state"] == "stopped"
        assert instances_in_file(api)["a"]["state"] == "stopped"
    before = api.file_text()
    await api.client.post("/instances/a/stop")
    assert api.file_text() == before
    for _ in range(2):
        response = await api.client.post("/instances/a/start")
        assert response.status_code == 200
        assert response.json()["desired_state"] == "running"
        assert instances_in_file(api)["a"]["state"] == "running"


@pytest.mark.anyio
async def test_restart_stamps_restarted_at_and_starts_a_stopped_instance(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x", "state": "stopped"})
    response = await api.client.post("/instances/a/restart")
    assert response.status_code == 200
    table = instances_in_file(api)["a"]
    assert table["state"] == "running"
    stamp = table["restarted_at"]
    assert stamp.tzinfo is not None  # type: ignore[attr-defined]
    assert response.json()["spec"]["restarted_at"] is not None


@pytest.mark.anyio
async def test_put_creates_then_replaces_the_whole_instance(api: Api) -> None:
    first = await api.client.put("/instances/a", json={"model_id": "m/x", "pooling": "mean"})
    assert first.status_code == 201
    second = await api.client.put("/instances/a", json={"model_id": "m/y"})
    assert second.status_code == 200
    assert instances_in_file(api)["a"] == {"model_id": "m/y"}
    mismatch = await api.client.put("/instances/a", json={"name": "b", "model_id": "m/y"})
    assert_error(mismatch, 400, "VALIDATION_ERROR")


@pytest.mark.anyio
async def test_a_gitops_owned_state_file_refuses_writes_with_409(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text('[instances.a]\nmodel_id = "m/x"\n')
    _, api = build(tmp_path)
    api.statefile.path.symlink_to(real)
    async with api.client:
        response = await api.client.post("/instances", json={"name": "b", "model_id": "m/x"})
        assert_error(response, 409, "STATE_READ_ONLY")
        assert_error(await api.client.post("/instances/a/stop"), 409, "STATE_READ_ONLY")
        assert_error(await api.client.delete("/instances/a"), 409, "STATE_READ_ONLY")
        assert "is a symlink" in response.json()["error"]
        assert (await api.client.get("/instances/a")).status_code == 200
        plan = (await api.client.get("/plan")).json()
        assert plan["read_only"] is True
        assert "is a symlink" in plan["read_only_reason"]
    assert real.read_text() == '[instances.a]\nmodel_id = "m/x"\n'


@pytest.mark.anyio
async def test_wait_ready_returns_once_the_controller_reports_ready(api: Api) -> None:
    written = anyio.Event()
    api.controller.hooks.append(written.set)

    async def controller() -> None:
        await written.wait()
        spec = api.statefile.load().instances["a"]
        api.store.put(observed(spec, Phase.STARTING, ready=False, pid=5))
        api.store.put(observed(spec))

    async with anyio.create_task_group() as tg:
        tg.start_soon(controller)
        response = await api.client.post(
            "/instances?wait=ready&timeout=30", json={"name": "a", "model_id": "m/x"}
        )
    assert response.status_code == 201
    assert response.json()["ready"] is True


@pytest.mark.anyio
async def test_wait_ready_after_restart_ignores_the_old_ready_process(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    api.store.put(observed(api.statefile.load().instances["a"]))  # ready with the old spec
    response = await api.client.post("/instances/a/restart?wait=ready&timeout=0.2")
    assert_error(response, 504, "TIMEOUT")


@pytest.mark.anyio
async def test_a_bad_wait_is_400_and_writes_nothing(api: Api) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    before = api.file_text()
    assert_error(await api.client.post("/instances/a/stop?wait=gone"), 400, "VALIDATION_ERROR")
    response = await api.client.post("/instances/a/stop?wait=ready&timeout=abc")
    assert_error(response, 400, "VALIDATION_ERROR")
    response = await api.client.post(
        "/instances?wait=ready&timeout=-1", json={"name": "b", "model_id": "m/x"}
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert api.file_text() == before
    assert api.controller.dirty == 1


def test_request_schemas_reject_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name":"a","model_id":"m","bogus":1}', type=CreateInstanceRequest)


@pytest.mark.anyio
async def test_a_stop_that_was_written_answers_200_even_if_the_file_is_broken_right_after(
    api: Api,
) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})

    def half_save() -> None:
        # An editor saves a half-written file just after our write lands.
        api.statefile.path.write_text("[instances.a\n")

    api.controller.hooks.append(half_save)
    response = await api.client.post("/instances/a/stop")
    assert response.status_code == 200, response.text
    assert response.json()["desired_state"] == "stopped"


@pytest.mark.anyio
async def test_a_wait_for_ready_ends_with_404_when_the_instance_is_deleted_meanwhile(
    api: Api,
) -> None:
    await api.client.post("/instances", json={"name": "a", "model_id": "m/x"})
    spec = api.statefile.load().instances["a"]
    api.store.put(observed(spec, Phase.STARTING, ready=False, pid=5))
    written = anyio.Event()
    api.controller.hooks.append(written.set)

    async def someone_deletes_it() -> None:
        await written.wait()
        api.statefile.remove_instance("a")
        api.store.put(observed(spec, Phase.STOPPING, ready=False, pid=5))
        api.store.forget("a")

    async with anyio.create_task_group() as tg:
        tg.start_soon(someone_deletes_it)
        response = await api.client.post("/instances/a/restart?wait=ready&timeout=20")
    body = assert_error(response, 404, "INSTANCE_NOT_FOUND")
    assert "deleted" in str(body["error"])


@pytest.mark.anyio
async def test_the_openapi_document_lists_404_for_every_route_that_can_wait(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    waiting = [
        paths["/instances"]["post"],
        paths["/instances/{name}"]["put"],
        *(paths[f"/instances/{{name}}/{verb}"]["post"] for verb in ("start", "stop", "restart")),
    ]
    for operation in waiting:
        assert {"404", "504"} <= set(operation["responses"])


@pytest.mark.anyio
async def test_creating_a_stopped_instance_answers_stopped_not_starting(api: Api) -> None:
    response = await api.client.post(
        "/instances", json={"name": "cold", "model_id": "org/m", "state": "stopped"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["phase"], body["desired_state"]) == (
        "stopped",
        "Stopped",
        "stopped",
    )
    assert (body["ready"], body["pid"]) == (False, None)
    listed = (await api.client.get("/instances/cold")).json()
    assert listed["status"] == "stopped"
