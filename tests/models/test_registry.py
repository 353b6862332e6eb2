"""The model registry against a local Hub: wanted models are fetched in the background with
progress, failures become conditions and events (on the model and on its instances), offline
caches and local directories need no network, the cache can be listed and evicted, every
fetch takes the weights of the configured binary, and every model the state file names has a
status."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tei_reconciler._types import SystemClock
from tei_reconciler.control.models import flavour_of
from tei_reconciler.models.cache import HubCache
from tei_reconciler.models.hub import Fetcher
from tei_reconciler.models.registry import ModelRegistry
from tei_reconciler.models.select import Flavour
from tei_reconciler.models.wants import Need, Want
from tei_reconciler.planner.backoff import BackoffPolicy
from tei_reconciler.planner.model_status import ModelState, ModelStatus
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

from support.hub import Hub, serving, unreachable_url
from support.model_files import TINY as FILES
from support.model_files import TINY_ID as REPO
from support.model_files import TINY_WEIGHTS as WEIGHTS
from support.model_files import write_cached, write_tree

pytestmark = pytest.mark.anyio
USED = Want(model_id=REPO, used_by=("embedder",))


class Harness:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.store = registry.store
        self.changes = 0

    def status(self, model_id: str = REPO) -> ModelStatus | None:
        return self.store.model(model_id)

    async def until(
        self, check: Callable[[ModelStatus | None], bool], model_id: str = REPO
    ) -> ModelStatus | None:
        """Wait (at most 30 s) until the model's status passes `check`."""
        with anyio.fail_after(30), self.store.subscribe() as changes:
            while not check(self.status(model_id)):
                await changes.receive()
        return self.status(model_id)


@asynccontextmanager
async def running(cache: Path, endpoint: str, **options: object) -> AsyncIterator[Harness]:
    registry = ModelRegistry(
        fetcher=Fetcher(HubCache(cache)),
        store=StatusStore(),
        clock=SystemClock(),
        endpoint=endpoint,
        **{"flavour": Flavour.SAFETENSORS, **options},  # type: ignore[arg-type]
    )
    harness = Harness(registry)

    def changed() -> None:
        harness.changes += 1

    registry.changed = changed
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        yield harness
        tg.cancel_scope.cancel()


def state_is(state: ModelState) -> Callable[[ModelStatus | None], bool]:
    return lambda status: status is not None and status.state is state


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving() as running_hub:
        running_hub.add(REPO, FILES)
        yield running_hub


async def test_a_wanted_model_is_downloading_then_complete_with_its_facts(
    hub: Hub, tmp_path: Path
) -> None:
    faults = hub.fault(REPO, "model.safetensors")
    faults.gate, faults.gate_at = threading.Event(), len(WEIGHTS) // 2
    async with running(tmp_path, hub.url) as h:
        h.registry.want({REPO: USED})
        gate = h.registry.gate(REPO)
        assert gate is not None
        assert gate.reason == "Downloading"
        assert not gate.failed
        midway = await h.until(
            lambda s: (
                s is not None
                and s.progress is not None
                and s.progress.files_done >= 2  # the weights come third, and wait on the gate
            )
        )
        assert midway is not None
        assert midway.state is ModelState.DOWNLOADING
        assert midway.progress is not None
        assert 0 < midway.progress.done_bytes < midway.progress.total_bytes
        assert "%), 2 of 4 files" in midway.message
        assert h.registry.gate(REPO) is not None
        faults.gate.set()
        done = await h.until(state_is(ModelState.DOWNLOADED))
        assert done is not None
        assert h.registry.gate(REPO) is None
        assert done.used_by == ("embedder",)
        assert done.commit == "c" * 40
        assert done.cache_path is not None
        assert (Path(done.cache_path) / "model.safetensors").read_bytes() == WEIGHTS
        assert done.cache_size_bytes is not None
        assert done.cache_size_bytes >= len(WEIGHTS)
        assert done.metadata is not None
        assert done.metadata.model_type == "bert"
        assert [e.reason for e in h.store.model_events(REPO)] == ["Downloaded"]
        assert h.changes > 0


async def test_a_failed_fetch_is_a_condition_on_the_model_and_an_event_on_its_instances(
    hub: Hub, tmp_path: Path
) -> None:
    missing = Want(model_id="acme/typo", used_by=("a", "b"))
    async with running(tmp_path, hub.url, backoff=BackoffPolicy(initial=600, maximum=600)) as h:
        h.registry.want({"acme/typo": missing})
        failed = await h.until(state_is(ModelState.FAILED), "acme/typo")
        assert failed is not None
        assert failed.reason == "RepoNotFound"
        assert "no model acme/typo" in failed.message
        assert "retry in 600s" in failed.message
        assert failed.retry_at is not None
        gate = h.registry.gate("acme/typo")
        assert gate is not None
        assert gate.failed
        assert gate.reason == "RepoNotFound"
        for instance in ("a", "b"):
            (event,) = h.store.events(instance)
            assert event.reason == "ModelUnavailable"
            assert event.type == "Warning"
        hub.add("acme/typo", FILES)
        h.registry.fetch_now("acme/typo")
        await h.until(state_is(ModelState.DOWNLOADED), "acme/typo")
        assert h.registry.gate("acme/typo") is None


async def test_a_failed_fetch_is_retried_on_the_backoff_curve(hub: Hub, tmp_path: Path) -> None:
    async with running(tmp_path, hub.url, backoff=BackoffPolicy(initial=0.05, maximum=0.1)) as h:
        h.registry.want({"acme/late": Want(model_id="acme/late")})
        await h.until(lambda s: s is not None and s.failures >= 2, "acme/late")
        hub.add("acme/late", FILES)
        await h.until(state_is(ModelState.DOWNLOADED), "acme/late")


async def test_offline_a_warm_cache_is_complete_without_any_request(
    hub: Hub, tmp_path: Path
) -> None:
    write_cached(tmp_path, REPO, FILES, "d" * 40)
    async with running(tmp_path, unreachable_url(), offline=True) as h:
        h.registry.want({REPO: USED})
        assert h.registry.gate(REPO) is None
        status = h.status()
        assert status is not None
        assert status.state is ModelState.DOWNLOADED
        assert status.commit == "d" * 40
    assert not hub.requests()


async def test_offline_a_cold_cache_fails_clearly(tmp_path: Path) -> None:
    async with running(tmp_path, unreachable_url(), offline=True) as h:
        h.registry.want({REPO: USED})
        failed = await h.until(state_is(ModelState.FAILED))
        assert failed is not None
        assert failed.reason == "NotCached"


async def test_a_local_directory_is_inspected_and_never_fetched(hub: Hub, tmp_path: Path) -> None:
    local = write_tree(tmp_path / "model", FILES)
    async with running(tmp_path / "cache", hub.url) as h:
        h.registry.want(
            {
                str(local): Want(model_id=str(local), local=True),
                "/no/such/dir": Want(model_id="/no/such/dir", local=True),
            }
        )
        status = h.status(str(local))
        assert status is not None
        assert status.state is ModelState.DOWNLOADED
        assert status.metadata is not None
        assert status.metadata.hidden_size == 8
        assert h.registry.gate(str(local)) is None
        gate = h.registry.gate("/no/such/dir")
        assert gate is not None
        assert gate.failed
        assert gate.reason == "ModelNotFound"
    assert not hub.requests()


async def test_the_cache_is_listed_and_an_unwanted_model_can_be_evicted(
    hub: Hub, tmp_path: Path
) -> None:
    write_cached(tmp_path, "other/cached", FILES, "e" * 40)
    async with running(tmp_path, hub.url) as h:
        listed = h.status("other/cached")
        assert listed is not None
        assert listed.state is ModelState.DOWNLOADED
        assert not listed.declared
        assert listed.used_by == ()
        assert await h.registry.evict("other/cached")
        assert h.status("other/cached") is None
        assert not (tmp_path / "models--other--cached").exists()
        assert [e.reason for e in h.store.model_events("other/cached")] == ["Evicted"]


async def test_a_model_no_longer_wanted_is_forgotten_unless_cached(
    hub: Hub, tmp_path: Path
) -> None:
    async with running(tmp_path, hub.url, backoff=BackoffPolicy(initial=600, maximum=600)) as h:
        h.registry.want({"acme/typo": Want(model_id="acme/typo")})
        await h.until(state_is(ModelState.FAILED), "acme/typo")
        h.registry.want({})
        assert h.status("acme/typo") is None
        assert h.registry.gate("acme/typo") is None


async def test_the_token_file_is_used_and_never_shown(
    hub: Hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("hf_very_secret\n")
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path / "cache", hub.url, token_file=token) as h:
        h.registry.want({REPO: USED, "acme/typo": Want(model_id="acme/typo")})
        await h.until(state_is(ModelState.DOWNLOADED))
        await h.until(state_is(ModelState.FAILED), "acme/typo")
        shown = repr([h.store.models(), h.store.events()])
    assert {s.authorization for s in hub.requests("GET", "/api/")} == {"Bearer hf_very_secret"}
    assert "hf_very_secret" not in shown
    assert "hf_very_secret" not in caplog.text


async def test_downloads_share_a_bounded_number_of_slots(hub: Hub, tmp_path: Path) -> None:
    names = ("acme/one", "acme/two")
    gates = []
    for name in names:
        hub.add(name, FILES)
        faults = hub.fault(name, "model.safetensors")
        faults.gate, faults.gate_at = threading.Event(), 10
        gates.append(faults.gate)
    async with running(tmp_path, hub.url, max_concurrent=1) as h:
        h.registry.want({n: Want(model_id=n) for n in names})

        def one_running() -> bool:
            statuses = [h.status(n) for n in names]
            reasons = sorted(s.reason for s in statuses if s is not None)
            return reasons == ["Downloading", "Queued"]

        with anyio.fail_after(30), h.store.subscribe() as changes:
            while not one_running():
                await changes.receive()
        for gate in gates:
            gate.set()
        for name in names:
            await h.until(state_is(ModelState.DOWNLOADED), name)


ONNX_ONLY = {k: v for k, v in FILES.items() if k != "model.safetensors"}
TEI = "/opt/tei/bin/text-embeddings-router"


@pytest.mark.parametrize(
    ("binary", "files", "declared", "taken", "left"),
    [
        ("builtin", ONNX_ONLY, False, "onnx/model.onnx", "model.safetensors"),
        ("builtin", ONNX_ONLY, True, "onnx/model.onnx", "model.safetensors"),
        ("builtin", FILES, False, "onnx/model.onnx", "model.safetensors"),
        (TEI, FILES, True, "model.safetensors", "onnx/model.onnx"),
    ],
)
async def test_a_fetch_asked_for_takes_the_weights_of_the_binary_that_will_serve_it(
    hub: Hub,
    tmp_path: Path,
    binary: str,
    files: dict[str, bytes],
    declared: bool,
    taken: str,
    left: str,
) -> None:
    """`POST /models/{id}/download` of a model nothing wants on disk (undeclared, or declared
    without keep and unused) fetches what the background fetches would."""
    hub.add("acme/asked", files)
    flavour = flavour_of(Settings(tei_binary=binary))
    async with running(tmp_path, hub.url, flavour=flavour) as h:
        if declared:
            listed = Want(model_id="acme/asked", need=Need.LISTED, declared=True)
            h.registry.want({"acme/asked": listed})
        h.registry.fetch_now("acme/asked")
        done = await h.until(
            lambda s: s is not None and s.state in (ModelState.DOWNLOADED, ModelState.FAILED),
            "acme/asked",
        )
    assert done is not None
    assert (done.state, done.reason, done.message) == (ModelState.DOWNLOADED, "Downloaded", "")
    assert done.declared is declared
    assert done.cache_path is not None
    assert (Path(done.cache_path) / taken).read_bytes() == files[taken]
    assert not (Path(done.cache_path) / left).exists()
    assert not hub.requests("GET", f"/resolve/{'c' * 40}/{left}")


async def test_a_named_model_not_wanted_on_disk_is_listed_with_why_and_never_fetched(
    hub: Hub, tmp_path: Path
) -> None:
    write_cached(tmp_path, "other/cached", FILES, "e" * 40)
    async with running(tmp_path, hub.url) as h:
        h.registry.want(
            {
                "acme/listed": Want(
                    model_id="acme/listed", revision="v1", need=Need.LISTED, declared=True
                ),
                "hash/8": Want(model_id="hash/8", need=Need.SHIPPED, used_by=("stand-in",)),
                "other/cached": Want(model_id="other/cached", need=Need.LISTED, declared=True),
            }
        )
        listed, shipped, cached = (h.status(m) for m in ("acme/listed", "hash/8", "other/cached"))
        assert listed is not None
        assert (listed.state, listed.reason, listed.revision, listed.declared) == (
            ModelState.AVAILABLE,
            "NotWanted",
            "v1",
            True,
        )
        assert "no instance uses it and keep is not set" in listed.message
        assert shipped is not None
        assert (shipped.state, shipped.reason, shipped.used_by) == (
            ModelState.AVAILABLE,
            "ServedWithoutCache",
            ("stand-in",),
        )
        assert cached is not None
        assert (cached.state, cached.declared) == (ModelState.DOWNLOADED, True)
        assert h.registry.gate("acme/listed") is None

        h.registry.want({})  # all undeclared and unused: gone, unless cached
        assert h.status("acme/listed") is None
        assert h.status("hash/8") is None
        cached = h.status("other/cached")
        assert cached is not None
        assert (cached.state, cached.declared) == (ModelState.DOWNLOADED, False)
    assert not hub.requests()


async def test_a_listed_model_an_instance_comes_to_use_is_fetched(hub: Hub, tmp_path: Path) -> None:
    async with running(tmp_path, hub.url) as h:
        h.registry.want({REPO: Want(model_id=REPO, need=Need.LISTED, declared=True)})
        assert not hub.requests()
        h.registry.want({REPO: Want(model_id=REPO, declared=True, used_by=("embedder",))})
        done = await h.until(state_is(ModelState.DOWNLOADED))
        assert done is not None
        assert (done.reason, done.used_by) == ("Downloaded", ("embedder",))
