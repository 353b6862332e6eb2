"""Fetch one model into the Hugging Face cache with huggingface_hub, or say clearly why not.

Blocking (huggingface_hub is synchronous): the registry runs it on a worker thread. The steps
are the Hub's own API: resolve the revision to a commit (`model_info`), list the files at that
commit (`list_repo_tree`, which also gives each file's size and checksum), pick the files the
serving binary reads (`select.py`), check the free disk space, then `hf_hub_download` each
missing file. Progress comes from huggingface_hub's `tqdm_class` hook; a dropped connection
is resumed by huggingface_hub with an HTTP Range request; files already in the cache are never
fetched again, so a failed fetch resumes where it stopped.

huggingface_hub checks only a file's size. Every fetched file is therefore verified against
the checksum the Hub listed for it (sha256 for LFS files, the git blob sha1 for the others);
a mismatch removes the file and fails the fetch.

Offline (`HF_HUB_OFFLINE` or the `hf_offline` setting) no request is made: a complete
snapshot in the cache is used as it is. When the Hub cannot be reached, a complete snapshot
of the wanted revision is used too. The token is passed to huggingface_hub and never logged.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tei_reconciler.models.cache import HubCache
from tei_reconciler.models.select import Flavour, missing_weights, select_files
from tei_reconciler.planner.model_status import Progress

log = logging.getLogger(__name__)

#: Exception class names (anywhere in the MRO) that mean "the Hub could not be reached";
#: huggingface_hub's HTTP client changed between releases, its exception names did not.
_NETWORK = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "TimeoutException",
        "ReadTimeout",
        "NetworkError",
        "RemoteProtocolError",
        "OfflineModeIsEnabled",
        "ConnectionError",
        "ProxyError",
    }
)
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_HASH_CHUNK = 1024 * 1024


class FetchError(Exception):
    """A fetch that failed: `reason` is a CamelCase word (the condition reason), `message`
    one sentence for a person."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Cancelled(Exception):
    """The registry no longer wants this fetch (shutdown, or the model was evicted)."""


@dataclass(frozen=True, slots=True)
class FetchRequest:
    model_id: str
    revision: str | None
    flavours: frozenset[Flavour]
    endpoint: str
    token: str | None = field(default=None, repr=False)
    offline: bool = False


@dataclass(frozen=True, slots=True)
class FetchResult:
    commit: str
    path: Path
    files: tuple[str, ...]
    fetched_bytes: int  # bytes downloaded by this fetch (0: everything was cached)
    note: str = ""  # e.g. "the Hub could not be reached; using the cached snapshot"


@dataclass(frozen=True, slots=True)
class _Listed:
    path: str
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # every file's git blob id


def _is_network(exc: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK for cls in type(exc).__mro__)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Fetcher:
    """Fetches models into one cache. `disk_free` is a seam for tests (bytes free at a path)."""

    def __init__(
        self,
        cache: HubCache,
        *,
        disk_free: Callable[[Path], int] | None = None,
        library: str = "tei-reconciler",
    ) -> None:
        self.cache = cache
        self._disk_free = disk_free or (lambda path: shutil.disk_usage(path).free)
        self._library = library

    # ---- the one entry point -----------------------------------------------------------
    def fetch(
        self,
        request: FetchRequest,
        report: Callable[[Progress], None],
        cancelled: threading.Event,
    ) -> FetchResult:
        """Make the cache hold `request`'s model; raises FetchError or Cancelled."""
        if request.offline:
            return self._cached_or(request, "NotCached", "offline mode (HF_HUB_OFFLINE) and")
        try:
            commit, listed = self._listing(request)
        except FetchError as exc:
            if exc.reason != "NoNetwork":
                raise
            return self._cached_or(request, "NoNetwork", f"{exc.message}, and", note=exc.message)
        return self._download(request, commit, listed, report, cancelled)

    def _cached_or(
        self, request: FetchRequest, reason: str, why: str, *, note: str = ""
    ) -> FetchResult:
        snapshot = self.cache.complete(request.model_id, request.revision, request.flavours)
        if snapshot is None:
            at = f"@{request.revision}" if request.revision else ""
            raise FetchError(
                reason,
                f"{why} {request.model_id}{at} is not complete in the cache ({self.cache.root})",
            )
        files = tuple(sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*")))
        return FetchResult(
            commit=snapshot.name,
            path=snapshot,
            files=files,
            fetched_bytes=0,
            note=f"{note}; using the cached snapshot" if note else "",
        )

    # ---- the Hub API -------------------------------------------------------------------
    def _api(self, request: FetchRequest) -> Any:
        from huggingface_hub import HfApi  # noqa: PLC0415 - only fetching hosts pay for it

        return HfApi(endpoint=request.endpoint, token=request.token, library_name=self._library)

    def _listing(self, request: FetchRequest) -> tuple[str, list[_Listed]]:
        from huggingface_hub.hf_api import RepoFile  # noqa: PLC0415 - lazy, see _api

        api = self._api(request)
        try:
            info = api.model_info(request.model_id, revision=request.revision)
            commit = str(info.sha)
            tree = api.list_repo_tree(request.model_id, revision=commit, recursive=True)
            listed = [
                _Listed(
                    path=f.path,
                    size=int(f.size),
                    sha256=f.lfs.sha256 if f.lfs is not None else None,
                    git_sha1=f.blob_id,
                )
                for f in tree
                if isinstance(f, RepoFile)
            ]
        except Exception as exc:
            raise self._explain(request, exc) from exc
        return commit, listed

    def _explain(self, request: FetchRequest, exc: Exception) -> FetchError:
        """One FetchError for whatever huggingface_hub or the OS raised."""
        name = type(exc).__name__
        where = request.endpoint
        if _is_network(exc):
            return FetchError("NoNetwork", f"cannot reach {where}: {exc}")
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return FetchError("DiskFull", f"the cache ({self.cache.root}) is full: {exc.strerror}")
        if name == "GatedRepoError":
            return FetchError(
                "GatedRepo",
                f"{request.model_id} is gated on {where}: accept its terms with the account of "
                "the token (hf_token_file)",
            )
        if name == "RevisionNotFoundError":
            return FetchError(
                "RevisionNotFound",
                f"{request.model_id} has no revision {request.revision or 'main'} on {where}",
            )
        if name == "RepositoryNotFoundError" or _status(exc) == 404:
            return FetchError(
                "RepoNotFound",
                f"no model {request.model_id} on {where} (or it is private and no token with "
                "access is configured)",
            )
        if _status(exc) in (401, 403):
            return FetchError(
                "Unauthorized", f"{where} refused the token for {request.model_id} ({_status(exc)})"
            )
        if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
            return FetchError("Incomplete", str(exc).splitlines()[0])
        status = _status(exc)
        if status is not None:
            return FetchError("HubError", f"{where} answered {status} for {request.model_id}")
        return FetchError("FetchFailed", f"{name}: {exc}")

    # ---- the files ---------------------------------------------------------------------
    def _download(
        self,
        request: FetchRequest,
        commit: str,
        listed: list[_Listed],
        report: Callable[[Progress], None],
        cancelled: threading.Event,
    ) -> FetchResult:
        by_path = {f.path: f for f in listed}
        lacking = missing_weights(by_path, request.flavours)
        if lacking is not None:
            raise FetchError("NotServable", f"{request.model_id}@{commit[:12]}: {lacking}")
        files = select_files(by_path, request.flavours)
        snapshot = self.cache.folder(request.model_id) / "snapshots" / commit
        todo = [by_path[f] for f in files if not (snapshot / f).is_file()]
        total = sum(by_path[f].size for f in files)
        need = sum(f.size for f in todo)
        self._check_space(need)
        done = total - need
        progress = _Counter(
            done=done, total=total, files_done=len(files) - len(todo), files_total=len(files)
        )
        report(progress.snapshot())
        for item in todo:
            if cancelled.is_set():
                raise Cancelled
            self._one(request, commit, item, progress=progress, report=report, cancelled=cancelled)
            progress.file_done(item.size)
            report(progress.snapshot())
        self.cache.set_ref(request.model_id, request.revision, commit)
        return FetchResult(commit=commit, path=snapshot, files=tuple(files), fetched_bytes=need)

    def _check_space(self, need: int) -> None:
        self.cache.root.mkdir(parents=True, exist_ok=True)
        free = self._disk_free(self.cache.root)
        if need > free:
            raise FetchError(
                "DiskFull",
                f"the files need {need / 1e6:.1f} MB but the cache ({self.cache.root}) has "
                f"{free / 1e6:.1f} MB free",
            )

    def _one(
        self,
        request: FetchRequest,
        commit: str,
        item: _Listed,
        *,
        progress: _Counter,
        report: Callable[[Progress], None],
        cancelled: threading.Event,
    ) -> None:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - lazy, see _api

        bar = progress.bar_class(report, cancelled)
        try:
            local = hf_hub_download(
                request.model_id,
                item.path,
                revision=commit,
                cache_dir=str(self.cache.root),
                endpoint=request.endpoint,
                token=request.token,
                library_name=self._library,
                tqdm_class=bar,
            )
        except Cancelled:
            raise
        except Exception as exc:
            raise self._explain(request, exc) from exc
        finally:
            progress.file_end()
        self._verify(request, Path(str(local)), item)

    def _verify(self, request: FetchRequest, local: Path, item: _Listed) -> None:
        blob = local.resolve()
        if item.sha256 is not None:
            got, expected, kind = sha256_of(blob), item.sha256, "sha256"
        elif item.git_sha1 is not None:
            got, expected, kind = git_blob_sha1(blob), item.git_sha1, "git sha1"
        else:
            return
        if got == expected:
            return
        local.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise FetchError(
            "ChecksumMismatch",
            f"{request.model_id}/{item.path}: {kind} {got[:12]} does not match the Hub's "
            f"{expected[:12]}; the corrupt file was removed",
        )


class _Counter:
    """Progress across the files of one fetch, fed by huggingface_hub's per-file bars."""

    def __init__(self, *, done: int, total: int, files_done: int, files_total: int) -> None:
        self._lock = threading.Lock()
        self.done, self.total = done, total
        self.files_done, self.files_total = files_done, files_total
        self._file_bytes = 0  # bytes of the current file seen so far

    def snapshot(self) -> Progress:
        with self._lock:
            return Progress(
                done_bytes=min(self.done + self._file_bytes, self.total),
                total_bytes=self.total,
                files_done=self.files_done,
                files_total=self.files_total,
            )

    def add(self, count: int) -> None:
        with self._lock:
            self._file_bytes = max(0, self._file_bytes + count)

    def file_end(self) -> None:
        with self._lock:
            self._file_bytes = 0

    def file_done(self, size: int) -> None:
        with self._lock:
            self.done += size
            self.files_done += 1

    def bar_class(
        self, report: Callable[[Progress], None], cancelled: threading.Event
    ) -> type[Any]:
        """A tqdm stand-in for `hf_hub_download(tqdm_class=...)`: counts bytes, reports, and
        raises Cancelled at the next chunk once the fetch is no longer wanted."""
        counter = self

        class Bar:
            def __init__(self, *args: object, **kwargs: object) -> None:
                initial = kwargs.get("initial")
                if isinstance(initial, int) and initial:
                    counter.add(initial)

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def update(self, count: float | None = 1) -> None:
                if cancelled.is_set():
                    raise Cancelled
                counter.add(int(count or 0))
                report(counter.snapshot())

            def close(self) -> None:
                return None

            def refresh(self) -> None:
                return None

            def set_postfix_str(self, *args: object, **kwargs: object) -> None:
                return None

        return Bar
