"""What a subscriber of the status store sees when it falls behind."""

from __future__ import annotations

import anyio
import pytest

from tei_reconciler.planner.model_status import ModelChange, ModelState, ModelStatus
from tei_reconciler.store import MISSED, StatusStore


def _model(model_id: str, reason: str) -> ModelStatus:
    return ModelStatus(model_id=model_id, state=ModelState.DOWNLOADING, reason=reason)


def test_a_subscriber_that_falls_behind_is_told_it_missed_changes_then_sees_the_next() -> None:
    store = StatusStore(subscriber_buffer=2)
    with store.subscribe() as receive:
        for step in ("one", "two", "three"):
            store.put_model(_model("org/m", step))
        assert receive.receive_nowait() == MISSED  # in place of what it had not read
        store.put_model(_model("org/m", "four"))
        change = receive.receive_nowait()
        with pytest.raises(anyio.WouldBlock):
            receive.receive_nowait()
    assert isinstance(change, ModelChange)
    assert change.status == _model("org/m", "four")


def test_a_subscriber_that_keeps_up_sees_every_change_and_no_missed() -> None:
    store = StatusStore(subscriber_buffer=2)
    with store.subscribe() as receive:
        seen = []
        for step in ("one", "two", "three"):
            store.put_model(_model("org/m", step))
            change = receive.receive_nowait()
            assert isinstance(change, ModelChange)
            assert change.status is not None
            seen.append(change.status.reason)
    assert seen == ["one", "two", "three"]
