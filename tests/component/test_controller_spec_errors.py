"""A state file mid-write is not an instruction to remove everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.control.source import DesiredSource, file_loader
from tei_reconciler.desired.spec import DesiredState, InstanceSpec
from tei_reconciler.store import StatusStore

from .reconciler_fakes import World, running
from support.clock import FakeClock

pytestmark = pytest.mark.anyio
SPEC = InstanceSpec(name="a", model_id="hash/8")


def truncate(path: str) -> None:
    Path(path).write_bytes(b"")


async def test_an_emptied_file_keeps_every_instance_and_says_why(tmp_path: Path) -> None:
    world = World(tmp_path)
    async with running(world):
        world.set_desired(SPEC)
        await world.phase("a", "Running")
        truncate(world.settings.state_file)
        await world.passes(2)
        assert world.driver.stopped == []
        assert "empty" in world.store.spec_errors[0]
        status = world.status("a")
        assert status is not None
        assert status.phase.value == "Running"
        world.set_desired()  # an explicit, non-empty file with no instances does remove
        await world.until(lambda: world.status("a") is None)
        assert world.store.spec_errors == ()


async def test_a_first_start_without_a_state_file_is_valid_and_desires_nothing(
    tmp_path: Path,
) -> None:
    store = StatusStore()
    path = tmp_path / "state.toml"
    source = DesiredSource(path, file_loader(frozenset()), store=store, clock=FakeClock())
    desired = await source.refresh()
    assert desired is not None
    assert desired.instances == {}
    assert not store.spec_errors
    path.write_text('[instances.a]\nmodel_id = "o/m"\n')
    assert set((await source.refresh()).instances) == {"a"}  # type: ignore[union-attr]
    path.unlink()  # a file that vanishes later is an error: the last good state stays
    assert set((await source.refresh()).instances) == {"a"}  # type: ignore[union-attr]
    assert "no such file" in store.spec_errors[0]


async def test_a_file_truncated_between_the_change_check_and_the_load_keeps_every_instance(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.toml"
    path.write_text('[instances.a]\nmodel_id = "o/m"\n')
    store = StatusStore()
    real = file_loader(frozenset())
    source = DesiredSource(path, real, store=store, clock=FakeClock())
    assert set((await source.refresh()).instances) == {"a"}  # type: ignore[union-attr]

    def editor_truncates_meanwhile(p: Path) -> DesiredState:
        p.write_bytes(b"")  # an in-place save: truncate first, write later
        return real(p)

    path.write_text('[instances.a]\nmodel_id = "o/m"\n[instances.b]\nmodel_id = "o/m"\n')
    source.loader = editor_truncates_meanwhile
    desired = await source.refresh()
    assert desired is not None
    assert set(desired.instances) == {"a"}  # the last good state, not "nothing"
    assert "empty" in store.spec_errors[0]
    source.loader = real
    path.write_text('[instances.a]\nmodel_id = "o/m"\n[instances.b]\nmodel_id = "o/m"\n')
    assert set((await source.refresh()).instances) == {"a", "b"}  # type: ignore[union-attr]
