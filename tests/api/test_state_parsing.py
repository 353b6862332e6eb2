"""The API parses state on a worker thread: `/health` answers while a large `PUT /state` is
validated, and the problems of a huge invalid file come back capped and counted."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import httpx
import pytest

from tei_reconciler.api import create_app
from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.desired.statefile import MAX_PROBLEMS, StateFile
from tei_reconciler.store import StatusStore

from .harness import make_settings

pytestmark = pytest.mark.anyio

TOML = {"content-type": "application/toml"}


class HeldStateFile(StateFile):
    """A real StateFile whose `parse` holds until released: while it holds, a parse running on
    the event loop would freeze every other request."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered, self.left, self.release = (threading.Event() for _ in range(3))

    def parse(self, data: bytes) -> DesiredState:
        self.entered.set()
        self.release.wait(timeout=10)
        try:
            return super().parse(data)
        finally:
            self.left.set()


def unknown_keys(count: int) -> bytes:
    head = b'[instances.a]\nmodel_id = "org/m"\n'
    return head + b"".join(b"key_%d = 1\n" % i for i in range(count))


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry_run", "write"])
async def test_health_answers_while_put_state_is_parsed(tmp_path: Path, dry_run: bool) -> None:
    runtime = tmp_path / "runtime"
    statefile = HeldStateFile(tmp_path / "state.toml")
    app = create_app(
        statefile=statefile,
        store=StatusStore(),
        settings=make_settings(runtime),
        on_change=lambda: None,
        preview=lambda desired: [],
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client,
        anyio.create_task_group() as tg,
    ):
        answers: list[httpx.Response] = []

        async def put() -> None:
            query = "?dry_run=true" if dry_run else ""
            answers.append(
                await client.put(f"/state{query}", content=unknown_keys(50_000), headers=TOML)
            )

        tg.start_soon(put)
        assert await anyio.to_thread.run_sync(statefile.entered.wait, 20)
        health = await client.get("/health")
        assert health.status_code == 200
        assert not statefile.left.is_set(), "/health waited for the parse: it ran on the loop"
        statefile.release.set()
    (response,) = answers
    assert response.status_code == 400
    details = response.json()["details"]
    assert len(details) == MAX_PROBLEMS + 1
    assert details[-1]["message"] == (
        f"... and {50_000 - MAX_PROBLEMS} more problems (only the first {MAX_PROBLEMS} shown)"
    )
    assert not statefile.path.exists()
