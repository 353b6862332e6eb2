"""Traffic through the router while a test does something else: a thread that calls `Embed`
on one instance (by the `x-tei-instance` key) back to back and counts what came back."""

from __future__ import annotations

import threading
from collections import Counter
from types import TracebackType

import grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.waiting import DEADLINE, wait_until


class Traffic:
    """`with Traffic(target, "name") as t:` calls until the block ends; `t.ok` answers with
    an embedding, `t.errors` every other outcome by status code (and its first message)."""

    def __init__(self, target: str, instance: str, *, timeout: float = DEADLINE) -> None:
        self.target = target
        self.instance = instance
        self.timeout = timeout
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.first_error: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{instance}", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        wait_until(lambda: self.ok or self.errors, f"a first call to {self.instance}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = tei_pb2_grpc.EmbedStub(channel)
            while not self._stop.is_set():
                try:
                    reply = stub.Embed(
                        tei_pb2.EmbedRequest(inputs="the serving instance keeps answering"),
                        metadata=[("x-tei-instance", self.instance)],
                        timeout=self.timeout,
                    )
                except grpc.RpcError as exc:
                    code = exc.code().name
                    self.errors[code] += 1
                    self.first_error.setdefault(code, exc.details() or "")
                    continue
                if reply.embeddings:
                    self.ok += 1
                else:
                    self.errors["EMPTY"] += 1

    def summary(self) -> str:
        return f"{self.ok} ok, errors {dict(self.errors)}: {self.first_error}"
