"""The controller's source of desired state: the last good state file, and its errors.

The file is re-read only when its bytes change (a pass may run many times a second while
probes report). A file that cannot be read or validated never replaces the last good state:
the errors go to the status store (`spec_errors`, a manager-wide event), the log and the
`spec_valid` metric, and the instances keep running as they were. An emptied file counts as
such an error once instances exist, since an editor's in-place save truncates first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.desired.statefile import load_state, revision_of
from tei_reconciler.errors import SpecError, StateFileError
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)

Loader = Callable[[Path], DesiredState]


def file_loader(reserved_ports: frozenset[int]) -> Loader:
    """Load and validate a state file (statefile.load_state) with the manager's own ports."""

    def load(path: Path) -> DesiredState:
        return load_state(path, reserved_ports=reserved_ports)

    return load


class DesiredSource:
    """Reads `path` through `loader` and keeps the last good result in `desired`."""

    def __init__(
        self,
        path: Path,
        loader: Loader,
        *,
        store: StatusStore,
        clock: Clock,
    ) -> None:
        self.path = path
        self.loader = loader
        self.running: Callable[[], bool] = lambda: False  # whether instance processes run
        self.store = store
        self.clock = clock
        self.desired: DesiredState | None = None  # None until a valid file was read
        self._seen: bytes | None = None

    def bind(self, *, running: Callable[[], bool]) -> None:
        """Learn from the controller whether instance processes run (adopted ones too)."""
        self.running = running

    def refresh(self) -> DesiredState | None:
        """Re-read the file if its bytes changed; return the last good desired state."""
        data: bytes | None = None
        try:
            data = self.path.read_bytes()
            digest = hashlib.sha256(data).digest()
        except OSError as exc:
            digest = str(exc).encode()
        if digest == self._seen:
            return self.desired
        self._seen = digest
        try:
            desired = self._load(data)
        except (SpecError, StateFileError) as exc:
            self._report(exc)
            return self.desired
        if self.store.spec_errors:
            self.store.record_event(
                "", "Normal", "SpecValid", "state file is valid again", self.clock.wall()
            )
        self.store.spec_errors = ()
        metrics.SPEC_VALID.set(1)
        self.desired = desired
        self.store.observed_revision = desired.revision
        return desired

    def _load(self, data: bytes | None) -> DesiredState:
        exists = data is not None or self.path.exists()
        if not exists and self.desired is None and self.running():
            # Processes adopted at boot, but no file (a volume not mounted yet, a swap under
            # way): reading that as "nothing desired" would stop every one of them.
            raise StateFileError(
                f"{self.path}: no such file; keeping the running instances as they are"
            )
        if not exists and self.desired is None:
            # First start with no state file yet: nothing is desired; the first API write or
            # hand edit creates the file. (A file that disappears later keeps the last state.)
            log.info("no state file at %s yet: no instances desired", self.path)
            return DesiredState(revision=revision_of(b""))
        has_instances = bool(self.desired and self.desired.instances) or self.running()
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
            self._seen = None
            raise emptied
        return desired

    def _reread(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _report(self, exc: SpecError | StateFileError) -> None:
        problems = exc.problems if isinstance(exc, SpecError) else [exc]
        errors = tuple(str(p) for p in problems)
        self.store.spec_errors = errors
        metrics.SPEC_VALID.set(0)
        metrics.SPEC_ERRORS.inc()
        log.warning(
            "state file %s is invalid; keeping the last good state:\n%s",
            self.path,
            "\n".join(errors),
        )
        self.store.record_event("", "Warning", "InvalidSpec", "; ".join(errors), self.clock.wall())
