"""`/models`: tei-manager's registry routes over the state file and a real model registry
fetching from a local Hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tei_reconciler._types import SystemClock
from tei_reconciler.models.cache import HubCache
from tei_reconciler.models.hub import Fetcher
from tei_reconciler.models.registry import ModelRegistry
from tei_reconciler.models.select import Flavour
from tei_reconciler.planner.backoff import BackoffPolicy

from .harness import Api, build
from support.hub import Hub, serving
from support.model_files import MINILM_CONFIG, as_json, safetensors, write_cached

pytestmark = pytest.mark.anyio
REPO = "acme/small"
ENCODED = "acme%2Fsmall"
FILES = {
    "config.json": as_json(MINILM_CONFIG),
    "tokenizer.json": b"{}",
    "model.safetensors": safetensors({"w": ("F16", (64, 64))}),
}


@dataclass
class World:
    api: Api
    hub: Hub
    registry: ModelRegistry
    cache: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with serving() as hub:
        hub.add(REPO, FILES)
        cache = tmp_path / "hub"
        write_cached(cache, "other/cached", FILES, "e" * 40)
        registry = ModelRegistry(
            fetcher=Fetcher(HubCache(cache)),
            store=None,  # type: ignore[arg-type]  # set below: the API's own store
            clock=SystemClock(),
            endpoint=hub.url,
            flavour=Flavour.SAFETENSORS,
            backoff=BackoffPolicy(initial=600, maximum=600),
        )
        _, api = build(tmp_path, models=registry)
        registry.store = api.store
        api.statefile.path.write_text('[instances.emb]\nmodel_id = "acme/used"\n')
        async with api.client, anyio.create_task_group() as tg:
            await tg.start(registry.run)
            yield World(api, hub, registry, cache)
            tg.cancel_scope.cancel()


async def test_the_list_has_declared_used_and_cached_models_in_tei_managers_shape(
    world: World,
) -> None:
    created = await world.api.client.post("/models", json={"model_id": REPO, "keep": True})
    assert created.status_code == 201
    assert '[models."acme/small"]\nkeep = true\n' in world.api.file_text()
    body = (await world.api.client.get("/models")).json()
    by_id = {m["model_id"]: m for m in body}
    assert list(by_id) == sorted(by_id)
    assert set(by_id) == {REPO, "acme/used", "other/cached"}
    assert by_id[REPO]["declared"]
    assert by_id[REPO]["keep"]
    assert by_id["acme/used"]["used_by"] == ["emb"]
    cached = by_id["other/cached"]
    assert cached["status"] == "downloaded"
    assert cached["downloaded"]
    assert cached["cache_path"].endswith("snapshots/" + "e" * 40)
    assert cached["cache_size_bytes"] > 0
    assert cached["metadata"]["hidden_size"] == 384
    assert cached["metadata"]["parameters"] == 64 * 64
    for model in body:
        assert {"model_id", "status", "downloaded"} <= model.keys()
        assert None not in model.values()  # null fields omitted, as tei-manager does


async def test_declaring_twice_answers_200_and_a_bad_id_400(world: World) -> None:
    assert (await world.api.client.post("/models", json={"model_id": REPO})).status_code == 201
    again = await world.api.client.post("/models", json={"model_id": REPO, "revision": "v2"})
    assert again.status_code == 200
    assert again.json()["revision"] == "v2"
    bad = await world.api.client.post("/models", json={"model_id": "not an id"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "VALIDATION_ERROR"
    typo = await world.api.client.post("/models", json={"model_id": REPO, "keeep": True})
    assert typo.status_code == 400


async def test_one_model_by_its_encoded_id_and_a_missing_one_is_404(world: World) -> None:
    assert (await world.api.client.get("/models/other%2Fcached")).json()["commit"] == "e" * 40
    missing = await world.api.client.get("/models/acme%2Fnope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "MODEL_NOT_FOUND"


async def test_download_with_wait_answers_once_the_model_is_on_disk(world: World) -> None:
    answer = await world.api.client.post(f"/models/{ENCODED}/download", params={"wait": "true"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "downloaded"
    assert (Path(body["cache_path"]) / "model.safetensors").read_bytes() == FILES[
        "model.safetensors"
    ]
    events = (await world.api.client.get(f"/models/{ENCODED}/events")).json()
    assert [e["reason"] for e in events] == ["Downloaded"]
    assert events[0]["model"] == REPO


async def test_download_without_wait_is_accepted_and_a_failure_is_tei_managers_500(
    world: World,
) -> None:
    queued = await world.api.client.post("/models/acme%2Fnope/download")
    assert queued.status_code == 202
    failed = await world.api.client.post("/models/acme%2Fnope/download", params={"wait": "true"})
    assert failed.status_code == 500
    assert failed.json()["code"] == "MODEL_DOWNLOAD_FAILED"
    assert "RepoNotFound" in failed.json()["error"]


async def test_evicting_a_model_in_use_is_refused_and_an_unused_one_is_removed(
    world: World,
) -> None:
    await world.api.client.post("/models", json={"model_id": "acme/used"})
    in_use = await world.api.client.delete("/models/acme%2Fused", params={"evict": "true"})
    assert in_use.status_code == 409
    assert in_use.json()["code"] == "MODEL_IN_USE"
    assert "emb" in in_use.json()["error"]
    assert '[models."acme/used"]' in world.api.file_text()
    gone = await world.api.client.delete("/models/other%2Fcached", params={"evict": "true"})
    assert gone.status_code == 204
    assert not (world.cache / "models--other--cached").exists()
    assert (await world.api.client.get("/models/other%2Fcached")).status_code == 404


async def test_deleting_undeclares_and_keeps_the_files(world: World) -> None:
    await world.api.client.post(f"/models/{ENCODED}/download", params={"wait": "true"})
    await world.api.client.post("/models", json={"model_id": REPO, "keep": True})
    assert (await world.api.client.delete(f"/models/{ENCODED}")).status_code == 204
    assert "models" not in world.api.file_text()
    assert (world.cache / "models--acme--small").is_dir()
