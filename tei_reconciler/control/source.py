"""The controller's source of desired state: the last good state file, and its errors.

The file is re-read only when its bytes change (a pass may run many times a second while
probes report). A file that cannot be read or validated never replaces the last good state:
the errors go to the status store (`spec_errors`, a manager-wide event that is also the one
log line of the read), the `spec_valid` metric, and the instances keep running as they were.
An emptied file counts as such an error once instances exist, since an editor's in-place save
truncates first. A file above `max_state_bytes` is refused unread; parsing and validating run
on a worker thread, so a large file never stalls the event loop (the API and the router keep
answering meanwhile).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.desired.statefile import (
    DEFAULT_MAX_BYTES,
    load_state,
    read_bounded,
    revision_of,
)
from tei_reconciler.errors import SpecError, StateFileError
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)

Loader = Callable[[Path], DesiredState]


def file_loader(reserved_ports: frozenset[int], max_bytes: int = DEFAULT_MAX_BYTES) -> Loader:
    """Load and validate a state file (statefile.load_state) with the manager's own ports."""

    def load(path: Path) -> DesiredState:
        return load_state(path, reserved_ports=reserved_ports, max_bytes=max_bytes)

    return load


@dataclass(frozen=True)
class _Read:
    """What parsing changed bytes on the worker thread found: the new desired state, or why
    there is none."""

    desired: DesiredState | None = None
    error: SpecError | StateFileError | None = None
    retry: bool = False  # look again on the next pass even if the bytes stay the same


class DesiredSource:
    """Reads `path` through `loader` and keeps the last good result in `desired`."""

    def __init__(
        self,
        path: Path,
        loader: Loader,
        *,
        store: StatusStore,
        clock: Clock,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = path
        self.loader = loader
        self.max_bytes = max_bytes
        self.running: Callable[[], bool] = lambda: False  # whether instance processes run
        self.store = store
        self.clock = clock
        self.desired: DesiredState | None = None  # None until a valid file was read
        self._seen: bytes | None = None

    def bind(self, *, running: Callable[[], bool]) -> None:
        """Learn from the controller whether instance processes run (adopted ones too)."""
        self.running = running

    async def refresh(self) -> DesiredState | None:
        """Re-read the file if its bytes changed; return the last good desired state.

        The bytes are read and hashed here (at most `max_bytes`, about a millisecond for the
        default MiB): a pass that finds them unchanged never leaves the event loop. Parsing
        and validating changed bytes, which can take seconds for a large file, run on a
        worker thread."""
        data: bytes | None = None
        try:
            data = read_bounded(self.path, self.max_bytes)
            digest = hashlib.sha256(data).digest()
        except (OSError, StateFileError) as exc:
            digest = str(exc).encode()
        if digest == self._seen:
            return self.desired
        first = self.desired is None
        has_instances = bool(self.desired and self.desired.instances) or self.running()
        read = await anyio.to_thread.run_sync(
            self._parse, data, first, has_instances, self.running()
        )
        self._seen = None if read.retry else digest
        if read.error is not None:
            self._report(read.error)
            return self.desired
        assert read.desired is not None
        desired = read.desired
        if self.store.spec_errors:
            self.store.record_event(
                "", "Normal", "SpecValid", "state file is valid again", self.clock.wall()
            )
        self.store.spec_errors = ()
        metrics.SPEC_VALID.set(1)
        self.desired = desired
        self.store.observed_revision = desired.revision
        return desired

    def _parse(self, data: bytes | None, first: bool, has_instances: bool, running: bool) -> _Read:
        """On a worker thread: touches neither the store nor the metrics, only the file."""
        try:
            return _Read(desired=self._load(data, first, has_instances, running))
        except _LookAgain as exc:
            return _Read(error=exc.error, retry=True)
        except (SpecError, StateFileError) as exc:
            return _Read(error=exc)

    def _load(
        self, data: bytes | None, first: bool, has_instances: bool, running: bool
    ) -> DesiredState:
        exists = data is not None or self.path.exists()
        if not exists and first and running:
            # Processes adopted at boot, but no file (a volume not mounted yet, a swap under
            # way): reading that as "nothing desired" would stop every one of them.
            raise StateFileError(
                f"{self.path}: no such file; keeping the running instances as they are"
            )
        if not exists and first:
            # First start with no state file yet: nothing is desired; the first API write or
            # hand edit creates the file. (A file that disappears later keeps the last state.)
            log.info("no state file at %s yet: no instances desired", self.path)
            return DesiredState(revision=revision_of(b""))
        emptied = StateFileError(
            f"{self.path}: the file is empty; keeping the last good state "
            "(write `[instances]` to remove every instance)"
        )
        if data is not None and not data.strip() and has_instances:
            raise emptied
        desired = self.loader(self.path)
        if has_instances and not desired.instances and data is not None and self._reread() != data:
            # The loader read other bytes than were checked above: an in-place save may have
            # truncated the file in between. Look again on the next pass, never remove all.
            raise _LookAgain(emptied)
        return desired

    def _reread(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _report(self, exc: SpecError | StateFileError) -> None:
        problems = exc.problems if isinstance(exc, SpecError) else [exc]
        errors = tuple(str(p) for p in problems)  # at most MAX_PROBLEMS + 1 (statefile.py)
        self.store.spec_errors = errors
        metrics.SPEC_VALID.set(0)
        metrics.SPEC_ERRORS.inc()
        # The event is the read's one log line (store.record_event logs it): every problem in
        # it, never a line per problem.
        message = "keeping the last good state: " + "; ".join(errors)
        self.store.record_event("", "Warning", "InvalidSpec", message, self.clock.wall())


class _LookAgain(Exception):
    """The file changed while it was read; report `error` and read it again next pass."""

    def __init__(self, error: StateFileError) -> None:
        super().__init__(str(error))
        self.error = error
