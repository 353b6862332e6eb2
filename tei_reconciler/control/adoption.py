"""Adoption: taking over the children a previous reconciler of this state file left running.

At boot the controller finds this owner's children by their markers (`Driver.discover`) and
hands them here before its first pass. Per instance the process whose spec hash matches the
desired spec is kept (else the oldest); duplicates are stopped. A kept process that runs
another command line than this reconciler would launch now (another binary, protocol or host:
a TEI upgrade) is marked stale, so the planner replaces it. Its ports go back into the port
book, so it keeps them across the restart, and the actuator follows its exit and health as if
it had spawned it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from tei_reconciler._types import Clock
from tei_reconciler.control.actuator import Actuator
from tei_reconciler.control.runtime import Placement, Runtime
from tei_reconciler.desired.spec import InstanceSpec, spec_hash
from tei_reconciler.drivers.ports import Assignment, PortBook
from tei_reconciler.drivers.process import Driver, Found
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)


def adopt(
    found: list[Found],
    wanted: Mapping[str, InstanceSpec],
    *,
    runtime: Callable[[str], Runtime],
    driver: Driver,
    actuator: Actuator,
    ports: PortBook,
    store: StatusStore,
    clock: Clock,
) -> None:
    """Take over `found` (children of this owner); `runtime(name)` is the instance's record."""
    by_name: dict[str, list[Found]] = {}
    for one in found:
        by_name.setdefault(one.instance, []).append(one)
    for name, candidates in by_name.items():
        spec = wanted.get(name)
        candidates.sort(key=lambda f: (spec is None or f.spec_hash != spec_hash(spec), f.pid))
        keep, extra = candidates[0], candidates[1:]
        for dup in extra:
            handle = driver.adopt(dup)
            if handle is not None:
                actuator.spawn(actuator.reap, handle)
        handle = driver.adopt(keep)
        if handle is None:
            continue
        if spec is not None and not _launched_as_now(actuator, keep, spec):
            # Same spec, other binary, protocol or host (a TEI upgrade): replace it.
            log.info("%s (pid %d) runs another command than configured now", name, keep.pid)
            handle.spec_hash = f"{keep.spec_hash}/stale-launch"
        rt = runtime(name)
        started = handle.started_wall
        rt.attach(
            handle,
            spec=spec if spec is not None and handle.spec_hash == spec_hash(spec) else None,
            placement=Placement(keep.port, keep.prometheus_port, keep.gpu_id),
            now=clock.now(),
            created_at=started if started is not None else clock.wall(),
        )
        if keep.port is not None and keep.prometheus_port is not None:
            ports.record(name, Assignment(port=keep.port, prometheus_port=keep.prometheus_port))
        store.record_event(
            name, "Normal", "Adopted", f"adopted running process {handle.pid}", clock.wall()
        )
        log.info("adopted %s (pid %d)", name, handle.pid)
        actuator.follow(rt, handle, rt.spec or spec)


def _launched_as_now(actuator: Actuator, found: Found, spec: InstanceSpec) -> bool:
    """Whether `found` runs the argv this reconciler would launch for `spec` on its ports
    (True when the kernel does not show the command line)."""
    if not found.argv or found.port is None or found.prometheus_port is None:
        return True
    expected = actuator.argv_for(spec, port=found.port, prom=found.prometheus_port)
    seen = list(found.argv)
    # A script run through its #! line shows as the interpreter, then the script's path.
    return seen == expected or seen[1:] == expected
