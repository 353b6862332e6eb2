"""What a subscriber of the status store sees when it falls behind."""

from __future__ import annotations

import anyio
import pytest

from tei_reconciler.planner.model_status import ModelChange, ModelState, ModelStatus
from tei_reconciler.store import StatusStore


def _model(model_id: str, reason: str) -> ModelStatus:
    return ModelStatus(model_id=model_id, state=ModelState.DOWNLOADING, reason=reason)


def test_a_subscriber_that_falls_behind_loses_the_oldest_changes_never_the_latest() -> None:
    store = StatusStore(subscriber_buffer=2)
    with store.subscribe() as receive:
        for step in ("one", "two", "three", "four"):
            store.put_model(_model("org/m", step))
        seen = []
        for _ in range(2):
            change = receive.receive_nowait()
            assert isinstance(change, ModelChange)
            assert change.status is not None
            seen.append(change.status.reason)
        with pytest.raises(anyio.WouldBlock):
            receive.receive_nowait()
    assert seen == ["three", "four"]
