"""The control loop: wait (dirty | timer) -> observe -> plan -> act -> publish.

Level-triggered: the watcher, process exits, probe results, API writes (`mark_dirty()`) and
the resync timer only set a flag; every pass re-reads the state file (when its bytes changed)
and snapshots every instance. Actions run in their own tasks (see actuator.py), one at a time
per instance (the planner leaves a busy instance alone), so a slow stop of one instance never
delays starting another; starts share a small concurrency limit. After every pass the status
store, the routing table and the metrics are republished.

An invalid state file changes nothing in the world: the last good desired state stays in
force and the errors are reported (`SpecValid=False`, status store, event, metric, log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.control.actuator import Actuator
from tei_reconciler.control.adoption import adopt
from tei_reconciler.control.models import ModelGlue
from tei_reconciler.control.publish import publish
from tei_reconciler.control.runtime import Runtime
from tei_reconciler.control.source import DesiredSource
from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.drivers.logrotate import Done, Rotation, rotate_log
from tei_reconciler.drivers.ports import PortBook
from tei_reconciler.drivers.probe import Prober
from tei_reconciler.drivers.process import Driver, Found, owner_digest
from tei_reconciler.planner.observed import Busy, ObservedInstance
from tei_reconciler.planner.plan import (
    AbortNext,
    Action,
    Forget,
    Promote,
    Start,
    StartNext,
    Stop,
    plan,
)
from tei_reconciler.planner.policy import Policy
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.tasks import PartEnded, stray

log = logging.getLogger(__name__)

HOUSEKEEPING_SECS = 1.0  # between two log size checks (and reaps of orphans)


class Controller:
    """Owns every instance process of one state file. Built with its parts by the
    composition root (`tei_reconciler.build`); it binds the actuator and the desired source to
    itself, and constructs nothing."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StatusStore,
        table: RoutingTable,
        clock: Clock,
        source: DesiredSource,
        driver: Driver,
        prober: Prober,
        ports: PortBook,
        policy: Policy,
        actuator: Actuator,
        models: ModelGlue | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.table = table
        self.clock = clock
        self.source = source
        self.driver = driver
        self.prober = prober
        self.ports = ports
        self.policy = policy
        self.actuator = actuator
        self.models = models
        source.bind(running=self._running)
        actuator.bind(changed=self.mark_dirty, spawn=self._spawn_task, forget=self._forget_runtime)
        self.runtimes: dict[str, Runtime] = {}
        self._found_at_boot = False
        self._dirty = anyio.Event()
        self._tg: TaskGroup | None = None
        self._abandoned = False  # crashing: leave the instances running at exit
        self.passes = 0  # completed reconcile passes (tests and the bench wait on it)

    @property
    def desired(self) -> DesiredState | None:
        """The last good desired state (None until a valid state file was read)."""
        return self.source.desired

    @staticmethod
    def owner_of(settings: Settings) -> str:
        """The owner marker of the children of a reconciler with these settings."""
        return owner_digest(Path(settings.state_file))

    # ---- triggers ----------------------------------------------------------------------
    def mark_dirty(self) -> None:
        """Ask for a pass soon. Cheap, idempotent, callable from any task on the loop."""
        self._dirty.set()

    def preview(self, desired: DesiredState) -> list[Action]:
        """What a pass would do now if `desired` were the state file (for dry runs)."""
        actions, _ = plan(desired, self._observe(), self.clock.now(), policy=self.policy)
        return actions

    # ---- the loop ----------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled. The loop's end by an error is a crash: the instances are
        left running at exit for the next reconciler (`abandon`)."""
        try:
            await self._loop(task_status)
        except BaseException as exc:
            if stray(exc):
                self.abandon()
            raise
        else:  # only a cancellation nobody asked for ends the loop's task group quietly
            self.abandon()
            raise PartEnded("the control loop's task group ended")
        finally:
            with anyio.CancelScope(shield=True):
                await self._shutdown()

    async def _loop(self, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            found = self.driver.discover()
            self._found_at_boot = bool(found)  # the first read knows what already runs
            await self.source.refresh()
            self._adopt(found)
            self._found_at_boot = False
            requeue = await self._pass()
            tg.start_soon(self._housekeep)
            task_status.started()
            while True:
                wait = self.settings.resync_interval_secs
                if requeue is not None:
                    wait = min(wait, max(0.0, requeue - self.clock.now()))
                with anyio.move_on_after(wait):
                    await self._dirty.wait()
                self._dirty = anyio.Event()
                requeue = await self._pass()

    async def _pass(self) -> float | None:
        started = time.perf_counter()
        await self.source.refresh()
        now = self.clock.now()
        requeue: float | None = None
        if self.desired is not None:
            self._gate_models()
            actions, requeue = plan(self.desired, self._observe(), now, policy=self.policy)
            for action in actions:
                self._dispatch(action)
            self._release_stale_ports()
        self._publish(now)
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        self.passes += 1
        return requeue

    # ---- observe -----------------------------------------------------------------------
    def _gate_models(self) -> None:
        """Hand the registry what the desired state wants; hold back instances whose model
        is not on disk (the registry marks the controller dirty when that changes)."""
        if self.models is None or self.desired is None:
            return
        gates = self.models.sync(self.desired)
        for name, rt in self.runtimes.items():
            rt.model_gate = gates.get(name)
        for name, gate in gates.items():
            self._runtime(name).model_gate = gate

    def _observe(self) -> dict[str, ObservedInstance]:
        return {name: rt.observe() for name, rt in self.runtimes.items()}

    def _runtime(self, name: str) -> Runtime:
        rt = self.runtimes.get(name)
        if rt is None:
            rt = self.runtimes[name] = Runtime(name=name)
        return rt

    def _running(self) -> bool:
        """Whether instance processes run now (adopted ones included)."""
        return self._found_at_boot or any(rt.processes() for rt in self.runtimes.values())

    def _adopt(self, found: list[Found]) -> None:
        """Take over this owner's children left by a previous reconciler; stop duplicates."""
        adopt(
            found,
            self.desired.instances if self.desired is not None else {},
            runtime=self._runtime,
            driver=self.driver,
            actuator=self.actuator,
            ports=self.ports,
            store=self.store,
            clock=self.clock,
        )

    # ---- act ---------------------------------------------------------------------------
    def _spawn_task(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a per-instance task in the loop's task group, through the actuator's boundary."""
        assert self._tg is not None
        self._tg.start_soon(self.actuator.guarded, func, *args)

    def _dispatch(self, action: Action) -> None:
        metrics.ACTIONS.labels(type(action).__name__.lower(), "dispatched").inc()
        if isinstance(action, Forget):
            self._forget(action.name)
            return
        rt = self._runtime(action.name)
        if isinstance(action, Start | StartNext):
            rt.busy = Busy.STARTING
            start = partial(
                self.actuator.start,
                explicit=self._explicit_ports(action.name),
                beside=isinstance(action, StartNext),
            )
            self._spawn_task(start, rt, action.spec)
        elif isinstance(action, Stop):
            rt.busy = Busy.STOPPING
            self._spawn_task(self.actuator.stop, rt, action)
        elif isinstance(action, Promote):
            # Switched before this pass publishes the routing table: the very next call goes
            # to the new process; the old one drains in its own task.
            rt.busy = Busy.SWITCHING
            old = self.actuator.switch(rt)
            self._spawn_task(self.actuator.retire, rt, old)
        elif isinstance(action, AbortNext):
            rt.busy = Busy.ABORTING
            self._spawn_task(self.actuator.abort_next, rt, action)

    def _forget(self, name: str) -> None:
        """Drop an instance everywhere at once: the API and the router never disagree on it."""
        self.runtimes.pop(name, None)
        self.store.forget(name)
        self.table.update([e for e in self.table.all() if e.name != name])
        self.ports.release(name)

    def _forget_runtime(self, rt: Runtime) -> None:
        """Drop `rt`'s instance once its removal is done, unless the name already lives again
        (created anew while the old process was being stopped): a record is dropped, never
        the name's current one."""
        if self.runtimes.get(rt.name) is rt:
            self._forget(rt.name)

    def _release_stale_ports(self) -> None:
        """Free the sticky ports of instances removed while no reconciler was running: no
        process and no Forget will ever release them, and the range would slowly fill up."""
        assert self.desired is not None
        for name in self.ports.names() - self.desired.instances.keys() - self.runtimes.keys():
            self.ports.release(name)

    def _explicit_ports(self, name: str) -> set[int]:
        assert self.desired is not None
        return {
            p
            for other in self.desired.instances.values()
            if other.name != name
            for p in (other.port, other.prometheus_port)
            if p is not None
        }

    # ---- publish -----------------------------------------------------------------------
    def _publish(self, now: float) -> None:
        desired = self.desired.instances if self.desired is not None else None
        publish(
            desired,
            self.runtimes,
            self.store,
            self.table,
            policy=self.policy,
            host=self.settings.instance_host,
            now=now,
            wall=self.clock.wall(),
        )

    async def _housekeep(self) -> None:
        """Every `HOUSEKEEPING_SECS`, whatever else happens: rotate the logs of running
        processes (on a worker thread: a copy may take a while), so `log_max_bytes` holds
        within seconds however fast a child writes; and reap orphans that ended."""
        while True:
            await anyio.sleep(HOUSEKEEPING_SECS)
            logs = {
                record.log_path: name
                for name, rt in self.runtimes.items()
                for _, record in rt.processes()
            }
            for path, outcome in (await anyio.to_thread.run_sync(self._rotate, logs)).items():
                self._rotated(logs[path], outcome)
            self.driver.reap_orphans()

    def _rotate(self, logs: dict[Path, str]) -> dict[Path, Rotation | OSError]:
        """On a worker thread: rotate each log that needs it."""
        done: dict[Path, Rotation | OSError] = {}
        for path in logs:
            try:
                rotation = rotate_log(
                    path, max_bytes=self.settings.log_max_bytes, backups=self.settings.log_backups
                )
            except OSError as exc:
                done[path] = exc
                continue
            if rotation:
                done[path] = rotation
        return done

    def _rotated(self, name: str, outcome: Rotation | OSError) -> None:
        if isinstance(outcome, OSError):
            log.warning("cannot rotate the log of %s: %s", name, outcome)
        elif outcome.done is Done.TRUNCATED:
            self.store.record_event(
                name,
                "Warning",
                "LogTruncated",
                f"the log outgrew log_max_bytes and no backup could be written "
                f"({outcome.error}): emptied without one",
                self.clock.wall(),
            )

    # ---- shutdown ----------------------------------------------------------------------
    def abandon(self) -> None:
        """The process is crashing: leave every instance running at exit, as a kill -9 would,
        for the next reconciler to adopt (whatever `on_shutdown` says)."""
        self._abandoned = True

    async def _shutdown(self) -> None:
        handles = [record.handle for rt in self.runtimes.values() for _, record in rt.processes()]
        if self._abandoned and handles:
            log.warning("leaving %d instance(s) running for the next reconciler", len(handles))
        elif self.settings.on_shutdown == "stop" and handles:
            log.info("stopping %d instance process(es)", len(handles))
            async with anyio.create_task_group() as tg:
                for handle in handles:
                    tg.start_soon(self.actuator.reap, handle)
        aclose = getattr(self.prober, "aclose", None)
        if aclose is not None:
            await aclose()
