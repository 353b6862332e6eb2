"""Adoption: taking over the children a previous reconciler of this state file left running.

At boot the controller finds this owner's children by their markers (`Driver.discover`) and
hands them here before its first pass. Per instance at most two are kept:

- one process only: it is the current process, whatever spec it runs (the planner replaces
  it, by surge or recreate, if its spec is not the desired one);
- a rollout interrupted by the restart (one process runs the desired spec, another an older
  one): the older one stays current (it was serving) and the desired one becomes the
  rollout's new process, so the rollout goes on where it stopped: the new process is probed
  and, once Ready, takes the traffic, and the old one drains and stops;
- any other process (a duplicate of a kept spec, or a third one) is stopped.

A kept process that runs another command line than this reconciler would launch now (another
binary, protocol or host: a TEI upgrade) is marked stale, so the planner replaces it. The
current process's ports go back into the port book, so the instance keeps them across the
restart; the new process's are held beside them. The actuator follows the exit and health
of every kept process as if it had spawned it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tei_reconciler._types import Clock
from tei_reconciler.control.actuator import Actuator
from tei_reconciler.control.runtime import Placement, ProcessRecord, Role, Runtime
from tei_reconciler.desired.spec import InstanceSpec, spec_hash
from tei_reconciler.drivers.ports import Assignment, PortBook
from tei_reconciler.drivers.process import Driver, Found
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)


def choose(
    candidates: list[Found], spec: InstanceSpec | None
) -> tuple[Found, Found | None, list[Found]]:
    """(current, next, extra) among one instance's processes: see the module docstring."""
    wanted = spec_hash(spec) if spec is not None else None
    matching = sorted((f for f in candidates if f.spec_hash == wanted), key=lambda f: f.pid)
    others = sorted((f for f in candidates if f.spec_hash != wanted), key=lambda f: f.pid)
    if matching and others:
        current, new = others[0], matching[0]
        extra = [*others[1:], *matching[1:]]
        return current, new, extra
    ordered = [*matching, *others]
    return ordered[0], None, ordered[1:]


@dataclass(frozen=True)
class _Adopter:
    """What adopting a process touches."""

    runtime: Callable[[str], Runtime]
    driver: Driver
    actuator: Actuator
    ports: PortBook
    clock: Clock

    def keep(self, found: Found, role: Role, spec: InstanceSpec | None) -> bool:
        """Adopt `found` in `role`; False when it is already gone."""
        handle = self.driver.adopt(found)
        if handle is None:
            return False
        name = found.instance
        if spec is not None and not _launched_as_now(self.actuator, found, spec):
            # Same spec, other binary, protocol or host (a TEI upgrade): replace it.
            log.info("%s (pid %d) runs another command than configured now", name, found.pid)
            handle.spec_hash = f"{found.spec_hash}/stale-launch"
        rt = self.runtime(name)
        started = handle.started_wall
        record = rt.attach(
            ProcessRecord(
                handle,
                spec=spec if spec is not None and handle.spec_hash == spec_hash(spec) else None,
                placement=Placement(found.port, found.prometheus_port, found.gpu_id),
                now=self.clock.now(),
                created_at=started if started is not None else self.clock.wall(),
                log_path=self.driver.log_path(name, beside=role is Role.NEXT),
            ),
            role=role,
        )
        if found.port is not None and found.prometheus_port is not None:
            assignment = Assignment(port=found.port, prometheus_port=found.prometheus_port)
            if role is Role.NEXT:
                self.ports.hold_next(name, assignment)
            else:
                self.ports.record(name, assignment)
        self.actuator.follow(rt, record)
        return True

    def reap(self, found: Found) -> None:
        handle = self.driver.adopt(found)
        if handle is not None:
            log.info("%s: stopping duplicate process %d", found.instance, found.pid)
            self.actuator.spawn(self.actuator.reap, handle)


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
    adopter = _Adopter(runtime, driver, actuator, ports, clock)
    by_name: dict[str, list[Found]] = {}
    for one in found:
        by_name.setdefault(one.instance, []).append(one)
    for name, candidates in by_name.items():
        spec = wanted.get(name)
        current, new, extra = choose(candidates, spec)
        for dup in extra:
            adopter.reap(dup)
        kept = adopter.keep(current, Role.CURRENT, spec)
        if new is not None:
            # Without the old one, the new one is simply the instance's process.
            adopter.keep(new, Role.NEXT if kept else Role.CURRENT, spec)
        for role, record in runtime(name).processes():
            what = " (the new process of an unfinished rollout)" if role is Role.NEXT else ""
            message = f"adopted running process {record.pid}{what}"
            store.record_event(name, "Normal", "Adopted", message, clock.wall())
            log.info("adopted %s (pid %d, %s)", name, record.pid, role.value)


def _launched_as_now(actuator: Actuator, found: Found, spec: InstanceSpec) -> bool:
    """Whether `found` runs the argv this reconciler would launch for `spec` on its ports
    (True when the kernel does not show the command line)."""
    if not found.argv or found.port is None or found.prometheus_port is None:
        return True
    expected = actuator.argv_for(spec, port=found.port, prom=found.prometheus_port)
    seen = list(found.argv)
    # A script run through its #! line shows as the interpreter, then the script's path.
    return seen == expected or seen[1:] == expected
