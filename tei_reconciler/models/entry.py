"""The model registry's mutable record of one model, and how it is shown (a ModelStatus).

A record holds what the desired state says of the model (`named`), a fetch asked through the
API (`requested`), and what the registry knows of it on disk and in flight. `wanted` is what
to have on disk; a named model that is not wanted says why it is not fetched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tei_reconciler.models.wants import Need, Want
from tei_reconciler.planner.model_status import ModelFacts, ModelState, ModelStatus, Progress

#: Why a named model is not fetched, by what the desired state needs of it.
_NOT_FETCHED = {
    Need.LISTED: (
        "NotWanted",
        "declared, but no instance uses it and keep is not set: fetched once an instance needs "
        "it, or when asked to download it",
    ),
    Need.SHIPPED: (
        "ServedWithoutCache",
        "its binary serves it without the cache: nothing to fetch",
    ),
}
#: Reasons of a model no fetch was asked for yet.
IDLE = frozenset({"", *(reason for reason, _ in _NOT_FETCHED.values())})


def not_fetched(need: Need) -> tuple[str, str]:
    """The reason and message of a named model that is not wanted on disk."""
    return _NOT_FETCHED[need]


@dataclass
class Entry:
    """The registry's mutable record of one model (published as a ModelStatus)."""

    model_id: str
    added_at: float
    named: Want | None = None  # what the desired state says of it (None: it names it not)
    requested: Want | None = None  # a one-off fetch asked through the API
    state: ModelState = ModelState.AVAILABLE
    reason: str = ""
    message: str = ""
    progress: Progress | None = None
    commit: str | None = None
    path: Path | None = None
    facts: ModelFacts | None = None
    facts_of: Path | None = None  # the snapshot `facts` and `size` were read from
    size: int | None = None  # bytes of the model's cache folder
    failures: int = 0
    retry_at: float | None = None  # monotonic
    retry_wall: float | None = None
    fetching: bool = False
    refresh: bool = False  # fetch_now: ask the Hub even when the cache is complete
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def wanted(self) -> Want | None:
        """What to have on disk: the desired state's want, else a fetch asked for."""
        if self.named is not None and self.named.need is Need.FETCH:
            return self.named
        return self.requested

    def status(self) -> ModelStatus:
        """The record as the status store and every reader sees it."""
        want = self.wanted or self.named
        named = self.named
        downloaded = self.state is ModelState.DOWNLOADED
        return ModelStatus(
            model_id=self.model_id,
            state=self.state,
            revision=want.revision if want is not None else None,
            commit=self.commit,
            local=want.local if want is not None else False,
            declared=named.declared if named is not None else False,
            keep=named.keep if named is not None else False,
            used_by=named.used_by if named is not None else (),
            cache_path=str(self.path) if self.path is not None else None,
            cache_size_bytes=self.size if downloaded else None,
            metadata=self.facts if downloaded else None,
            progress=self.progress if self.state is ModelState.DOWNLOADING else None,
            reason=self.reason,
            message=self.message,
            retry_at=self.retry_wall if self.state is ModelState.FAILED else None,
            failures=self.failures,
            added_at=self.added_at,
        )
