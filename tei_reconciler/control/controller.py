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
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from tei_reconciler import metrics
from tei_reconciler._types import Clock, SystemClock
from tei_reconciler.control.actuator import Actuator, Drain
from tei_reconciler.control.publish import publish
from tei_reconciler.control.runtime import Runtime
from tei_reconciler.control.source import DesiredSource, Loader, file_loader
from tei_reconciler.desired.spec import DesiredState, InstanceSpec, spec_hash
from tei_reconciler.drivers.gpus import detect_gpus
from tei_reconciler.drivers.ports import Assignment, PortBook
from tei_reconciler.drivers.probe import Prober, make_prober
from tei_reconciler.drivers.process import (
    Driver,
    Found,
    ProcessDriver,
    owner_digest,
    rotate_log,
)
from tei_reconciler.planner.backoff import BackoffPolicy
from tei_reconciler.planner.observed import Busy, ObservedInstance
from tei_reconciler.planner.plan import Action, Forget, Policy, Start, Stop, plan
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)

_ROTATE_EVERY = 5.0  # seconds between log size checks


class Controller:
    """Owns every instance process of one state file."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StatusStore,
        table: RoutingTable,
        clock: Clock | None = None,
        loader: Loader | None = None,
        driver: Driver | None = None,
        prober: Prober | None = None,
        gpus: tuple[int, ...] | None = None,
        base_env: Mapping[str, str] | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.table = table
        self.clock = clock or SystemClock()
        self.state_file = Path(settings.state_file)
        runtime_dir = Path(settings.runtime_dir)
        reserved = settings.reserved_ports
        self.source = DesiredSource(
            self.state_file,
            loader or file_loader(reserved),
            store=store,
            clock=self.clock,
            running=self._running,
        )
        self.owner = owner_digest(self.state_file)
        self.driver: Driver = driver or ProcessDriver(
            runtime_dir=runtime_dir, owner=self.owner, clock=self.clock
        )
        self.prober: Prober = prober or make_prober(settings.tei_protocol)
        self.ports = PortBook(
            runtime_dir / "ports.json",
            host=settings.instance_host,
            instance_range=(settings.instance_port_range[0], settings.instance_port_range[1]),
            prometheus_range=(
                settings.prometheus_port_range[0],
                settings.prometheus_port_range[1],
            ),
            reserved=reserved,
        )
        self.policy = Policy(
            startup_timeout_secs=settings.startup_timeout_secs,
            failure_threshold=settings.failure_threshold,
            max_instances=settings.max_instances,
        )
        self.backoff = BackoffPolicy(
            initial=settings.backoff_initial_secs,
            maximum=settings.backoff_max_secs,
            reset_after=settings.backoff_reset_secs,
        )
        self.actuator = Actuator(
            settings,
            driver=self.driver,
            prober=self.prober,
            ports=self.ports,
            store=store,
            clock=self.clock,
            backoff=self.backoff,
            gpus=detect_gpus() if gpus is None else gpus,
            base_env=os.environ if base_env is None else base_env,
            owner=self.owner,
            changed=self.mark_dirty,
            spawn=self._spawn_task,
            forget=self._forget,
            drain=drain,
        )
        self.runtimes: dict[str, Runtime] = {}
        self._found_at_boot = False
        self._dirty = anyio.Event()
        self._tg: TaskGroup | None = None
        self._last_rotate = 0.0
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
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                found = self.driver.discover()
                self._found_at_boot = bool(found)  # the first read knows what already runs
                self.source.refresh()
                self._adopt(found)
                self._found_at_boot = False
                requeue = await self._pass()
                task_status.started()
                while True:
                    wait = self.settings.resync_interval_secs
                    if requeue is not None:
                        wait = min(wait, max(0.0, requeue - self.clock.now()))
                    with anyio.move_on_after(wait):
                        await self._dirty.wait()
                    self._dirty = anyio.Event()
                    requeue = await self._pass()
        finally:
            with anyio.CancelScope(shield=True):
                await self._shutdown()

    async def _pass(self) -> float | None:
        started = time.perf_counter()
        self.source.refresh()
        now = self.clock.now()
        requeue: float | None = None
        if self.desired is not None:
            actions, requeue = plan(self.desired, self._observe(), now, policy=self.policy)
            for action in actions:
                self._dispatch(action)
            self._release_stale_ports()
        self._publish(now)
        if now - self._last_rotate >= _ROTATE_EVERY:
            self._last_rotate = now
            self._rotate_logs()
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        self.passes += 1
        return requeue

    # ---- observe -----------------------------------------------------------------------
    def _observe(self) -> dict[str, ObservedInstance]:
        return {name: rt.observe() for name, rt in self.runtimes.items()}

    def _runtime(self, name: str) -> Runtime:
        rt = self.runtimes.get(name)
        if rt is None:
            rt = self.runtimes[name] = Runtime(name=name)
        return rt

    def _running(self) -> bool:
        """Whether instance processes run now (adopted ones included)."""
        return self._found_at_boot or any(rt.handle is not None for rt in self.runtimes.values())

    def _adopt(self, found: list[Found]) -> None:
        """Take over this owner's children left by a previous reconciler; stop duplicates."""
        wanted = self.desired.instances if self.desired is not None else {}
        by_name: dict[str, list[Found]] = {}
        for one in found:
            by_name.setdefault(one.instance, []).append(one)
        for name, candidates in by_name.items():
            spec = wanted.get(name)
            candidates.sort(key=lambda f: (spec is None or f.spec_hash != spec_hash(spec), f.pid))
            keep, extra = candidates[0], candidates[1:]
            for dup in extra:
                handle = self.driver.adopt(dup)
                if handle is not None:
                    self._spawn_task(self.actuator.reap, handle)
            handle = self.driver.adopt(keep)
            if handle is None:
                continue
            if spec is not None and not self._launched_as_now(keep, spec):
                # Same spec, other binary, protocol or host (a TEI upgrade): replace it.
                log.info("%s (pid %d) runs another command than configured now", name, keep.pid)
                handle.spec_hash = f"{keep.spec_hash}/stale-launch"
            rt = self._runtime(name)
            rt.attach(
                handle,
                spec=spec if spec is not None and handle.spec_hash == spec_hash(spec) else None,
                now=self.clock.now(),
                wall=self.clock.wall(),
            )
            rt.port, rt.prometheus_port, rt.gpu_id = keep.port, keep.prometheus_port, keep.gpu_id
            if handle.started_wall is not None:
                rt.created_at = handle.started_wall
            if keep.port is not None and keep.prometheus_port is not None:
                self.ports.record(
                    name, Assignment(port=keep.port, prometheus_port=keep.prometheus_port)
                )
            self.store.record_event(
                name,
                "Normal",
                "Adopted",
                f"adopted running process {handle.pid}",
                self.clock.wall(),
            )
            log.info("adopted %s (pid %d)", name, handle.pid)
            self.actuator.follow(rt, handle, rt.spec or spec)

    def _launched_as_now(self, found: Found, spec: InstanceSpec) -> bool:
        """Whether `found` runs the argv this reconciler would launch for `spec` on its ports
        (True when the kernel does not show the command line)."""
        if not found.argv or found.port is None or found.prometheus_port is None:
            return True
        expected = self.actuator.argv_for(spec, port=found.port, prom=found.prometheus_port)
        return list(found.argv) == expected

    # ---- act ---------------------------------------------------------------------------
    def _spawn_task(self, func: Callable[..., object], *args: object) -> None:
        assert self._tg is not None
        self._tg.start_soon(func, *args)  # type: ignore[arg-type]

    def _dispatch(self, action: Action) -> None:
        metrics.ACTIONS.labels(type(action).__name__.lower(), "dispatched").inc()
        if isinstance(action, Forget):
            self._forget(action.name)
            return
        rt = self._runtime(action.name)
        if isinstance(action, Start):
            rt.busy = Busy.STARTING
            self._spawn_task(
                partial(self.actuator.start, explicit=self._explicit_ports(action.name)),
                rt,
                action.spec,
            )
        elif isinstance(action, Stop):
            rt.busy = Busy.STOPPING
            self._spawn_task(self.actuator.stop, rt, action)

    def _forget(self, name: str) -> None:
        self.runtimes.pop(name, None)
        self.store.forget(name)
        self.ports.release(name)
        self._spawn_task(self.prober.forget, name)

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

    def _rotate_logs(self) -> None:
        for name, rt in self.runtimes.items():
            if rt.handle is not None:
                try:
                    rotate_log(
                        self.driver.log_path(name),
                        max_bytes=self.settings.log_max_bytes,
                        backups=self.settings.log_backups,
                    )
                except OSError as exc:
                    log.warning("cannot rotate the log of %s: %s", name, exc)

    # ---- shutdown ----------------------------------------------------------------------
    async def _shutdown(self) -> None:
        handles = [rt.handle for rt in self.runtimes.values() if rt.handle is not None]
        if self.settings.on_shutdown == "stop" and handles:
            log.info("stopping %d instance(s)", len(handles))
            async with anyio.create_task_group() as tg:
                for handle in handles:
                    tg.start_soon(self.actuator.reap, handle)
        for name in list(self.runtimes):
            await self.prober.forget(name)
        aclose = getattr(self.prober, "aclose", None)
        if aclose is not None:
            await aclose()
