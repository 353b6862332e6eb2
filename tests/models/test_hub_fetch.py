"""Fetching through huggingface_hub's real code against a local Hub: progress, resume after a
dropped connection, missing repos and revisions, corrupt files, a full disk, offline hosts."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tei_reconciler.models.cache import HubCache
from tei_reconciler.models.hub import Cancelled, Fetcher, FetchError, FetchRequest, FetchResult
from tei_reconciler.models.select import Flavour
from tei_reconciler.planner.model_status import Progress

from support.hub import Hub, serving, unreachable_url
from support.model_files import TINY as FILES
from support.model_files import TINY_ID as REPO
from support.model_files import TINY_WEIGHTS as WEIGHTS


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving() as running:
        running.add(REPO, FILES)
        yield running


class Run:
    """One fetch with its progress reports kept."""

    def __init__(self, cache: Path, **fetcher: object) -> None:
        self.cache = HubCache(cache)
        self.fetcher = Fetcher(self.cache, **fetcher)  # type: ignore[arg-type]
        self.reports: list[Progress] = []
        self.cancelled = threading.Event()

    def __call__(
        self,
        url: str,
        *,
        model: str = REPO,
        revision: str | None = None,
        flavours: frozenset[Flavour] = frozenset({Flavour.SAFETENSORS}),
        offline: bool = False,
        token: str | None = None,
    ) -> FetchResult:
        request = FetchRequest(
            model_id=model,
            revision=revision,
            flavours=flavours,
            endpoint=url,
            token=token,
            offline=offline,
        )
        return self.fetcher.fetch(request, self.reports.append, self.cancelled)


def failure(run: Run, url: str, **kwargs: object) -> FetchError:
    with pytest.raises(FetchError) as caught:
        run(url, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_a_fetch_takes_only_what_the_server_reads_and_reports_its_progress(
    hub: Hub, tmp_path: Path
) -> None:
    run = Run(tmp_path)
    result = run(hub.url)
    assert result.commit == "c" * 40
    assert set(result.files) == {
        "config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "model.safetensors",
    }
    assert (result.path / "model.safetensors").read_bytes() == WEIGHTS
    assert run.cache.commit(REPO, None) == result.commit
    assert not hub.requests("GET", "flax_model")
    assert not hub.requests("GET", "onnx")
    done = [p.done_bytes for p in run.reports]
    assert done == sorted(done)
    total = sum(len(FILES[f]) for f in result.files)
    assert run.reports[-1] == Progress(
        done_bytes=total, total_bytes=total, files_done=4, files_total=4
    )
    assert any(0 < p.done_bytes < total for p in run.reports)


def test_the_onnx_flavour_takes_the_onnx_export_instead_of_the_safetensors(
    hub: Hub, tmp_path: Path
) -> None:
    result = Run(tmp_path)(hub.url, flavours=frozenset({Flavour.ONNX}))
    assert "onnx/model.onnx" in result.files
    assert "model.safetensors" not in result.files


def test_a_second_fetch_downloads_nothing(hub: Hub, tmp_path: Path) -> None:
    Run(tmp_path)(hub.url)
    before = len(hub.requests("GET", "/resolve/"))
    again = Run(tmp_path)(hub.url)
    assert again.fetched_bytes == 0
    assert len(hub.requests("GET", "/resolve/")) == before


def test_a_dropped_connection_is_resumed_with_a_range_request(hub: Hub, tmp_path: Path) -> None:
    big = bytes(range(256)) * (48 * 1024)  # 12 MiB: huggingface_hub writes 10 MiB chunks
    hub.add("acme/big", {**FILES, "model.safetensors": big})
    hub.fault("acme/big", "model.safetensors").drop_after = 11 * 1024 * 1024
    result = Run(tmp_path)(hub.url, model="acme/big")
    data = (result.path / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).digest() == hashlib.sha256(big).digest()
    ranged = [s.range for s in hub.requests("GET", "acme/big/resolve") if s.range]
    assert len(ranged) == 1
    start = int(ranged[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(big)


def test_a_missing_repo_is_named_with_the_endpoint(hub: Hub, tmp_path: Path) -> None:
    error = failure(Run(tmp_path), hub.url, model="acme/nope")
    assert error.reason == "RepoNotFound"
    assert f"no model acme/nope on {hub.url}" in error.message


def test_a_missing_revision_is_its_own_reason(hub: Hub, tmp_path: Path) -> None:
    error = failure(Run(tmp_path), hub.url, revision="v9")
    assert error.reason == "RevisionNotFound"
    assert "has no revision v9" in error.message


def test_a_corrupt_file_is_detected_removed_and_fetched_again_next_time(
    hub: Hub, tmp_path: Path
) -> None:
    hub.fault(REPO, "model.safetensors").corrupt = True
    run = Run(tmp_path)
    error = failure(run, hub.url)
    assert error.reason == "ChecksumMismatch"
    assert "model.safetensors: sha256" in error.message
    blobs = run.cache.folder(REPO) / "blobs"
    assert hashlib.sha256(WEIGHTS).hexdigest() not in {p.name for p in blobs.iterdir()}
    assert run.cache.complete(REPO, None, {Flavour.SAFETENSORS}) is None
    hub.fault(REPO, "model.safetensors").corrupt = False
    result = run(hub.url)
    assert (result.path / "model.safetensors").read_bytes() == WEIGHTS


def test_a_full_disk_fails_before_any_weight_is_downloaded(hub: Hub, tmp_path: Path) -> None:
    run = Run(tmp_path, disk_free=lambda path: 1000)
    error = failure(run, hub.url)
    assert error.reason == "DiskFull"
    assert "has 0.0 MB free" in error.message
    assert not hub.requests("GET", "/resolve/")


def test_a_repo_without_the_weights_the_binary_reads_is_not_fetched(
    hub: Hub, tmp_path: Path
) -> None:
    hub.add("acme/no-onnx", {k: v for k, v in FILES.items() if not k.startswith("onnx")})
    error = failure(
        Run(tmp_path), hub.url, model="acme/no-onnx", flavours=frozenset({Flavour.ONNX})
    )
    assert error.reason == "NotServable"
    assert "no ONNX export" in error.message
    assert not hub.requests("GET", "/resolve/")


def test_offline_a_complete_cache_is_used_without_a_single_request(
    hub: Hub, tmp_path: Path
) -> None:
    first = Run(tmp_path)(hub.url)
    seen = len(hub.requests())
    again = Run(tmp_path)(hub.url, offline=True)
    assert again.path == first.path
    assert len(hub.requests()) == seen


def test_offline_an_empty_cache_is_a_clear_failure(tmp_path: Path) -> None:
    error = failure(Run(tmp_path), unreachable_url(), offline=True)
    assert error.reason == "NotCached"
    assert "offline mode" in error.message
    assert str(tmp_path) in error.message


def test_without_network_a_complete_cache_still_serves_and_an_empty_one_fails(
    hub: Hub, tmp_path: Path
) -> None:
    Run(tmp_path / "warm")(hub.url)
    down = unreachable_url()
    result = Run(tmp_path / "warm")(down)
    assert "using the cached snapshot" in result.note
    error = failure(Run(tmp_path / "cold"), down)
    assert error.reason == "NoNetwork"
    assert f"cannot reach {down}" in error.message


def test_the_token_is_sent_as_a_bearer_token(hub: Hub, tmp_path: Path) -> None:
    Run(tmp_path)(hub.url, token="hf_secret_value")
    assert {s.authorization for s in hub.requests("GET", "/api/")} == {"Bearer hf_secret_value"}


def test_a_fetch_no_longer_wanted_stops_mid_file(hub: Hub, tmp_path: Path) -> None:
    faults = hub.fault(REPO, "model.safetensors")
    faults.gate, faults.gate_at = threading.Event(), len(WEIGHTS) // 2
    run = Run(tmp_path)
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            run(hub.url)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    assert faults.reached.wait(30)
    run.cancelled.set()
    faults.gate.set()
    worker.join(30)
    assert len(errors) == 1
    assert isinstance(errors[0], Cancelled)
    assert run.cache.complete(REPO, None, {Flavour.SAFETENSORS}) is None
