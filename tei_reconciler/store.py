"""The status store: the controller writes instance statuses and events, the model registry
model statuses and events; everyone else reads.

The REST API, the metrics collector and the CLI only read it.
Readers get immutable Structs (planner/status.py), so a snapshot can be encoded or compared
without locks. Changes are published to subscribers (the API's SSE watch) through bounded anyio
memory streams, so a subscriber that cannot keep up never blocks the controller: when its
buffer is full, the changes it has not read are replaced by one `Missed`, after which it reads
the store's current state again (as a Kubernetes client re-lists after its watch expired).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tei_reconciler.planner.model_status import ModelChange, ModelStatus
from tei_reconciler.planner.status import Event, InstanceStatus, StoreChange


class Missed(msgspec.Struct, frozen=True):
    """To a subscriber that fell behind: changes it had not read were dropped, so any status
    may have changed since it last looked."""


MISSED = Missed()
Change = StoreChange | ModelChange | Missed
_EventKey = tuple[str, str, str]

log = logging.getLogger("tei_reconciler.events")


class StatusStore:
    """In-memory status of every instance and a bounded event log per instance."""

    def __init__(self, *, events_per_instance: int = 100, subscriber_buffer: int = 256) -> None:
        self._statuses: dict[str, InstanceStatus] = {}
        self._events: dict[str, OrderedDict[_EventKey, Event]] = {}
        self._models: dict[str, ModelStatus] = {}
        self._model_events: dict[str, OrderedDict[_EventKey, Event]] = {}
        self._events_per_instance = events_per_instance
        self._subscriber_buffer = subscriber_buffer
        # Each subscriber's two ends: a full buffer is emptied for one MISSED.
        self._subscribers: dict[
            MemoryObjectSendStream[Change], MemoryObjectReceiveStream[Change]
        ] = {}
        self.spec_errors: tuple[str, ...] = ()  # errors of the current state file, if invalid
        self.first_pass_done = False
        self.observed_revision = ""  # revision of the last valid desired state acted on

    # ---- reads -------------------------------------------------------------------------
    def get(self, name: str) -> InstanceStatus | None:
        return self._statuses.get(name)

    def all(self) -> list[InstanceStatus]:
        return [self._statuses[n] for n in sorted(self._statuses)]

    def events(self, name: str | None = None) -> list[Event]:
        """Events of one instance (or of all, models included, `name=None`), oldest first."""
        if name is not None:
            return list(self._events.get(name, {}).values())
        logs = [*self._events.values(), *self._model_events.values()]
        merged = [e for log in logs for e in log.values()]
        return sorted(merged, key=lambda e: e.last_time)

    def model(self, model_id: str) -> ModelStatus | None:
        return self._models.get(model_id)

    def models(self) -> list[ModelStatus]:
        return [self._models[m] for m in sorted(self._models)]

    def model_events(self, model_id: str) -> list[Event]:
        return list(self._model_events.get(model_id, {}).values())

    @contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[Change]]:
        send, receive = anyio.create_memory_object_stream[Change](self._subscriber_buffer)
        self._subscribers[send] = receive
        try:
            yield receive
        finally:
            self._subscribers.pop(send, None)
            send.close()
            receive.close()

    # ---- writes (controller only) ------------------------------------------------------
    def put(self, status: InstanceStatus) -> None:
        if self._statuses.get(status.name) == status:
            return
        self._statuses[status.name] = status
        self._publish(StoreChange(name=status.name, status=status))

    def forget(self, name: str) -> None:
        if self._statuses.pop(name, None) is not None:
            self._publish(StoreChange(name=name, status=None))
        self._events.pop(name, None)

    def record_event(
        self, instance: str, type_: str, reason: str, message: str, at: float
    ) -> Event:
        events = self._events.setdefault(instance, OrderedDict())
        return self._record(
            events, instance, "", type_=type_, reason=reason, message=message, at=at
        )

    # ---- writes (model registry only) --------------------------------------------------
    def put_model(self, status: ModelStatus) -> None:
        if self._models.get(status.model_id) == status:
            return
        self._models[status.model_id] = status
        self._publish(ModelChange(model_id=status.model_id, status=status))

    def forget_model(self, model_id: str) -> None:
        if self._models.pop(model_id, None) is not None:
            self._publish(ModelChange(model_id=model_id, status=None))

    def record_model_event(
        self, model_id: str, type_: str, reason: str, message: str, at: float
    ) -> Event:
        events = self._model_events.setdefault(model_id, OrderedDict())
        return self._record(
            events, "", model_id, type_=type_, reason=reason, message=message, at=at
        )

    def _record(
        self,
        events: OrderedDict[_EventKey, Event],
        instance: str,
        model: str,
        *,
        type_: str,
        reason: str,
        message: str,
        at: float,
    ) -> Event:
        key = (type_, reason, message)
        previous = events.pop(key, None)
        event = Event(
            instance=instance,
            model=model,
            type=type_,
            reason=reason,
            message=message,
            count=1 if previous is None else previous.count + 1,
            first_time=at if previous is None else previous.first_time,
            last_time=at,
        )
        events[key] = event
        while len(events) > self._events_per_instance:
            events.popitem(last=False)
        _log_event(event)
        return event

    def _publish(self, change: Change) -> None:
        for send, receive in list(self._subscribers.items()):
            try:
                try:
                    send.send_nowait(change)
                except anyio.WouldBlock:  # a slow reader: it reads the whole state again
                    with suppress(anyio.WouldBlock):
                        while True:
                            receive.receive_nowait()
                    send.send_nowait(MISSED)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.pop(send, None)


def _log_event(event: Event) -> None:
    """Every event also goes to the log, so `journalctl`/`kubectl logs` tell the same story."""
    level = logging.WARNING if event.type == "Warning" else logging.INFO
    subject = event.instance or (f"model {event.model}" if event.model else "reconciler")
    log.log(level, "%s: %s: %s", subject, event.reason, event.message)
