"""The model registry: makes the Hugging Face cache hold the models the state file wants.

Level-triggered like the controller: every pass the controller hands it every model the
desired state names (`want`), each saying whether it is wanted on disk; the registry answers
at once, from the cache on disk, whether each wanted one is complete (`gate`), and its own
loop fetches the missing ones in the background, at most `max_concurrent` at a time. A failed
fetch is retried on the crash-loop backoff curve (10 s doubling to 5 min by default);
`fetch_now` (REST `POST /models/{id}/download`) retries at once, checks the Hub for a newer
commit of the wanted revision, or fetches a model nothing wants on disk. Every fetch takes the
weights of the one binary that serves the models (`flavour`: ONNX for the built-in engine,
safetensors for TEI), whatever asked for it. Statuses, progress (bytes and percent, at most a
few updates a second) and events go to the status store, from which the REST API, the event
stream and the CLI read them; the controller is asked for a pass whenever a model becomes
complete or fails.

Every named model has a status, so declaring, undeclaring, using or dropping a model reaches
the watches. Models the binary serves without the cache (the packaged MiniLM, `hash/...`)
and declared models nothing uses are listed, not fetched; a local directory is inspected,
never fetched. The cache is also scanned, so models put there by someone else (another host,
TEI itself, `hf download`) are listed too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from tei_reconciler._types import Clock
from tei_reconciler.models.cache import CachedModel, HubCache
from tei_reconciler.models.entry import IDLE, Entry, not_fetched
from tei_reconciler.models.hub import Cancelled, Fetcher, FetchError, FetchRequest, FetchResult
from tei_reconciler.models.inspect import InspectError, read_facts
from tei_reconciler.models.select import Flavour
from tei_reconciler.models.wants import Want, is_local
from tei_reconciler.planner.backoff import BackoffPolicy, delay_for
from tei_reconciler.planner.model_status import ModelFacts, ModelGate, ModelState, Progress
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between progress updates published for one fetch


class ModelRegistry:
    """See the module docstring. `changed` asks the controller for a pass."""

    def __init__(
        self,
        *,
        fetcher: Fetcher,
        store: StatusStore,
        clock: Clock,
        endpoint: str,
        flavour: Flavour,
        token_file: Path | None = None,
        offline: bool = False,
        max_concurrent: int = 2,
        backoff: BackoffPolicy | None = None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.fetcher = fetcher
        self.cache: HubCache = fetcher.cache
        self.store = store
        self.clock = clock
        self.endpoint = endpoint
        self.flavours = frozenset({flavour})  # the weights the binary reads: every fetch's
        self.token_file = token_file
        self.offline = offline
        self.backoff = backoff or BackoffPolicy()
        self.changed = changed
        self._slots = anyio.CapacityLimiter(max(1, max_concurrent))
        self._entries: dict[str, Entry] = {}
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None

    # ---- what the controller asks ------------------------------------------------------
    def want(self, named: Mapping[str, Want]) -> None:
        """Every model the desired state names now (the others are no longer named)."""
        changed = False
        for model_id, entry in list(self._entries.items()):
            if model_id in named or entry.named is None:
                continue
            entry.named = None
            changed = True
            if entry.wanted is None:
                entry.cancel.set()  # nobody wants it any more
                if entry.state is not ModelState.DOWNLOADED:
                    self._forget(entry)
                    continue
            self._settle(entry)  # still cached, or still asked for through the API
        for model_id, want in named.items():
            entry = self._entry(model_id)
            if entry.named != want:
                entry.named = want
                changed = True
                if entry.wanted is None:
                    entry.cancel.set()  # a fetch of it, if one runs, is wanted no more
                elif entry.wanted is want and entry.retry_at == math.inf:
                    entry.retry_at = None  # a one-off fetch failed; now the state file wants it
            self._settle(entry)
        if changed:
            self._wake.set()

    def gate(self, model_id: str) -> ModelGate | None:
        """Why an instance on `model_id` may not start yet; None when it may."""
        entry = self._entries.get(model_id)
        if entry is None or entry.wanted is None or entry.state is ModelState.DOWNLOADED:
            return None
        if entry.state is ModelState.FAILED:
            return ModelGate(reason=entry.reason, message=entry.message, failed=True)
        return ModelGate(reason="Downloading", message=entry.message or "waiting to download")

    def snapshot(self, model_id: str) -> Path | None:
        """The complete directory of a wanted model (None until it is complete)."""
        entry = self._entries.get(model_id)
        if entry is None or entry.state is not ModelState.DOWNLOADED:
            return None
        return entry.path

    def facts(self, model_id: str) -> ModelFacts | None:
        entry = self._entries.get(model_id)
        return entry.facts if entry is not None else None

    # ---- what the REST API asks --------------------------------------------------------
    def fetch_now(self, model_id: str, revision: str | None = None) -> None:
        """Fetch `model_id` now: retry a failed fetch at once, check the Hub for a newer
        commit of a complete one, or fetch a model nothing wants on disk (it is then cached),
        at `revision`, else the revision its declaration names."""
        entry = self._entry(model_id)
        if entry.wanted is None or entry.wanted is entry.requested:
            declared = entry.named.revision if entry.named is not None else None
            entry.requested = Want(
                model_id=model_id, revision=revision or declared, local=is_local(model_id)
            )
        wanted = entry.wanted
        assert wanted is not None
        if wanted.local:
            return
        entry.refresh = True
        entry.retry_at = None
        if not entry.fetching:
            entry.state = ModelState.AVAILABLE
            entry.reason, entry.message = "Queued", "waiting for a download slot"
            self._publish(entry)
        self._wake.set()

    async def evict(self, model_id: str) -> bool:
        """Remove `model_id` from the cache (stopping a fetch of it); False when absent."""
        entry = self._entries.get(model_id)
        if entry is not None:
            entry.cancel.set()
            entry.requested = None
            entry.state, entry.path, entry.facts, entry.facts_of, entry.commit, entry.size = (
                ModelState.AVAILABLE,
                None,
                None,
                None,
                None,
                None,
            )
        removed = await anyio.to_thread.run_sync(self.cache.evict, model_id)
        if removed:
            self.store.record_model_event(
                model_id, "Normal", "Evicted", "removed from the cache", self.clock.wall()
            )
        if entry is not None:
            if entry.named is None:
                self._forget(entry)
            else:
                self._settle(entry)
        self._wake.set()
        return removed

    def _forget(self, entry: Entry) -> None:
        self._entries.pop(entry.model_id, None)
        self.store.forget_model(entry.model_id)

    # ---- the loop ----------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._scan(await anyio.to_thread.run_sync(self.cache.scan))
            task_status.started()
            try:
                while True:
                    self._pass()
                    wait = self._next_retry()
                    with anyio.move_on_after(wait if wait is not None else 3600.0):
                        await self._wake.wait()
                    self._wake = anyio.Event()
            finally:
                for entry in self._entries.values():
                    entry.cancel.set()

    def _next_retry(self) -> float | None:
        now = self.clock.now()
        waits = [
            max(0.0, e.retry_at - now)
            for e in self._entries.values()
            if e.retry_at is not None
            and math.isfinite(e.retry_at)
            and e.wanted is not None
            and not e.fetching
        ]
        return min(waits, default=None)

    def _pass(self) -> None:
        now = self.clock.now()
        for entry in list(self._entries.values()):
            self._settle(entry)
            wanted = entry.wanted
            if wanted is None or wanted.local or entry.fetching:
                continue
            due = entry.retry_at is None or entry.retry_at <= now
            if (entry.state is not ModelState.DOWNLOADED or entry.refresh) and due:
                self._start_fetch(entry)

    def _scan(self, found: list[CachedModel]) -> None:
        """List the models already in the cache (once, at start)."""
        for cached in found:
            entry = self._entry(cached.model_id)
            commit = cached.refs.get("main") or next(iter(cached.refs.values()), None)
            if commit is not None and entry.wanted is None:
                path = cached.path / "snapshots" / commit
                if path.is_dir():
                    entry.state, entry.commit, entry.path = ModelState.DOWNLOADED, commit, path
                    entry.reason = "Cached"
                    self._read_facts(entry)
            self._publish(entry)

    # ---- one model ---------------------------------------------------------------------
    def _entry(self, model_id: str) -> Entry:
        entry = self._entries.get(model_id)
        if entry is None:
            entry = self._entries[model_id] = Entry(model_id=model_id, added_at=self.clock.wall())
        return entry

    def _settle(self, entry: Entry) -> None:
        """Bring a wanted entry up to date with the disk (cheap: a few stat calls), and say
        why an entry that is named, not wanted and not on disk is not fetched."""
        want = entry.wanted
        if want is None and entry.named is not None and not entry.fetching:
            if entry.state is not ModelState.DOWNLOADED:
                entry.state, entry.path, entry.progress = ModelState.AVAILABLE, None, None
                entry.retry_at, entry.retry_wall, entry.failures = None, None, 0
                entry.reason, entry.message = not_fetched(entry.named.need)
        elif want is not None and not entry.fetching:
            if want.local:
                self._settle_local(entry, Path(want.model_id))
            else:
                path = self.cache.complete(want.model_id, want.revision, self.flavours)
                if path is not None:
                    self._complete(entry, path)
                elif entry.state is ModelState.DOWNLOADED:
                    entry.state, entry.path = ModelState.AVAILABLE, None
                    entry.reason, entry.message = "NotCached", "waiting to download"
                elif entry.state is ModelState.AVAILABLE and entry.reason in IDLE:
                    entry.reason, entry.message = "NotCached", "waiting to download"
        self._publish(entry)

    def _settle_local(self, entry: Entry, path: Path) -> None:
        if path.is_dir():
            entry.state, entry.path, entry.reason, entry.message = (
                ModelState.DOWNLOADED,
                path,
                "Local",
                "a local directory",
            )
            self._read_facts(entry)
        else:
            entry.state, entry.path = ModelState.FAILED, None
            entry.reason, entry.message = "ModelNotFound", f"{path} is not a directory"

    def _complete(self, entry: Entry, path: Path) -> None:
        entry.state, entry.path, entry.commit = ModelState.DOWNLOADED, path, path.name
        entry.progress, entry.retry_at, entry.retry_wall, entry.failures = None, None, None, 0
        if entry.reason in IDLE or entry.reason in ("NotCached", "Queued", "Downloading"):
            entry.reason, entry.message = "Cached", ""
        self._read_facts(entry)

    def _read_facts(self, entry: Entry) -> None:
        if entry.path is None or entry.facts_of == entry.path:
            return
        entry.facts_of = entry.path
        wanted = entry.wanted
        local = wanted is not None and wanted.local
        try:
            entry.facts = read_facts(entry.path)
        except InspectError as exc:
            entry.facts = None
            log.warning("cannot inspect %s: %s", entry.model_id, exc)
        if local:
            entry.size = entry.facts.size_bytes if entry.facts is not None else None
        else:
            entry.size = self.cache.size(entry.model_id)

    def _start_fetch(self, entry: Entry) -> None:
        wanted = entry.wanted
        assert self._tg is not None
        assert wanted is not None
        entry.fetching, entry.refresh = True, False
        entry.cancel = threading.Event()
        entry.state = ModelState.DOWNLOADING
        entry.reason, entry.message = "Queued", "waiting for a download slot"
        self._publish(entry)
        self._tg.start_soon(self._fetch, entry, wanted)

    async def _fetch(self, entry: Entry, want: Want) -> None:
        request = FetchRequest(
            model_id=want.model_id,
            revision=want.revision,
            flavours=self.flavours,
            endpoint=self.endpoint,
            token=self._token(),
            offline=self.offline,
        )
        try:
            async with self._slots:
                entry.reason, entry.message = "Downloading", "resolving the revision"
                self._publish(entry)
                result = await anyio.to_thread.run_sync(
                    self.fetcher.fetch,
                    request,
                    self._reporter(entry),
                    entry.cancel,
                    abandon_on_cancel=True,
                )
        except Cancelled:
            entry.state, entry.progress, entry.reason, entry.message = (
                ModelState.AVAILABLE,
                None,
                "",
                "",
            )
        except FetchError as exc:
            self._failed(entry, exc.reason, exc.message)
        except Exception as exc:  # a bug or an OS surprise: still an outcome, logged once
            log.exception("fetching %s failed unexpectedly", want.model_id, exc_info=exc)
            self._failed(entry, "FetchFailed", f"{type(exc).__name__}: {exc}")
        else:
            self._fetched(entry, result)
        finally:
            entry.fetching = False
            if entry.state is not ModelState.FAILED:
                entry.requested = None  # done; a failure stays listed until asked again
            if entry.named is None and entry.wanted is None and entry.state is ModelState.AVAILABLE:
                self._forget(entry)  # a cancelled fetch of a model nothing names
            else:
                self._settle(entry)
            self._wake.set()
            self.changed()

    def _fetched(self, entry: Entry, result: FetchResult) -> None:
        entry.facts_of = None  # new files: read the facts and size again
        self._complete(entry, result.path)
        entry.reason = "Downloaded" if result.fetched_bytes else "Cached"
        entry.message = result.note
        if result.fetched_bytes:
            message = (
                f"fetched {result.fetched_bytes / 1e6:.1f} MB ({len(result.files)} files) "
                f"at commit {result.commit[:12]}"
            )
            self.store.record_model_event(
                entry.model_id, "Normal", "Downloaded", message, self.clock.wall()
            )

    def _failed(self, entry: Entry, reason: str, message: str) -> None:
        """A failed fetch: retried on the backoff curve while the state file wants the
        model; a one-off fetch (the API's, of a model nothing wants) is not retried."""
        entry.failures += 1
        entry.state, entry.progress = ModelState.FAILED, None
        wall = self.clock.wall()
        if entry.wanted is not None and entry.wanted is entry.named:
            delay = delay_for(entry.failures, self.backoff)
            entry.retry_at, entry.retry_wall = self.clock.now() + delay, wall + delay
            retry = f"retry in {delay:g}s"
        else:
            entry.retry_at, entry.retry_wall = math.inf, None
            retry = "not retried: nothing wants it"
        entry.reason, entry.message = reason, f"{message} ({retry})"
        self.store.record_model_event(entry.model_id, "Warning", reason, message, wall)
        for instance in entry.named.used_by if entry.named is not None else ():
            self.store.record_event(
                instance, "Warning", "ModelUnavailable", f"{entry.model_id}: {message}", wall
            )
        log.warning("cannot fetch %s: %s: %s (%s)", entry.model_id, reason, message, retry)

    def _reporter(self, entry: Entry) -> Callable[[Progress], None]:
        """Progress from the worker thread, handed to the loop at each file boundary and at
        most a few times a second within a file."""
        last_time, last_files = 0.0, -1

        def publish(progress: Progress) -> None:
            entry.progress = progress
            entry.reason, entry.message = "Downloading", progress.describe()
            self._publish(entry)
            self.changed()

        def report(progress: Progress) -> None:
            nonlocal last_time, last_files
            now = time.monotonic()
            if progress.files_done == last_files and now - last_time < PROGRESS_EVERY:
                entry.progress = progress
                return
            last_time, last_files = now, progress.files_done
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
                anyio.from_thread.run_sync(publish, progress)

        return report

    def _token(self) -> str | None:
        """The Hub token, read from its file at each fetch (so a rotated token is used)."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            log.warning("cannot read hf_token_file %s: %s", self.token_file, exc.strerror)
            return None
        return token or None

    def _publish(self, entry: Entry) -> None:
        self.store.put_model(entry.status())
