"""The actuator: carries out the planner's actions (start, stop, and a rollout's start beside,
switch and abort), and follows each process (`following.py`).

It is the one boundary where acting on the world can fail: every error of a start becomes an
outcome (phase `Failed` with a reason, retried on a slow curve; a failed rollout when it was
the new process of one), every exit becomes data (`last_exit`, crash backoff), every probe
result becomes data (consecutive failures, readiness). A process that leaves routing alive is
drained before it is stopped. It never decides what to do next; it records what happened and
asks the controller for another pass.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.control.following import Following
from tei_reconciler.control.models import ModelGlue
from tei_reconciler.control.runtime import Placement, ProcessRecord, Runtime
from tei_reconciler.desired.spec import InstanceSpec, spec_hash
from tei_reconciler.drivers.command import build_argv, build_env, read_api_key, resolve_binary
from tei_reconciler.drivers.gpus import cuda_visible_devices
from tei_reconciler.drivers.logrotate import hand_over_log
from tei_reconciler.drivers.logtail import log_size
from tei_reconciler.drivers.ports import PortBook
from tei_reconciler.drivers.probe import Prober
from tei_reconciler.drivers.process import Driver, ProcessHandle
from tei_reconciler.errors import ActionError, PermanentError
from tei_reconciler.planner.actions import AbortNext, Stop
from tei_reconciler.planner.backoff import BackoffPolicy
from tei_reconciler.planner.model_status import INSUFFICIENT_GPU_MEMORY, UNSUPPORTED_MODEL
from tei_reconciler.planner.policy import Policy
from tei_reconciler.planner.status import STOPPED_BECAUSE, ExitInfo, exit_summary
from tei_reconciler.routing import Backend
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.tasks import stray

log = logging.getLogger(__name__)

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
FOLLOW_RETRY_SECS = 1.0  # before following a process again after its follower failed

#: The data plane's drain: returns once no new call reaches the process `backend` and its
#: calls in flight have ended (routing.DataPlane.drain).
Drain = Callable[[Backend], Awaitable[None]]


def _task_name(task: Callable[..., object]) -> str:
    inner = getattr(task, "func", task)  # a functools.partial names its function
    return str(getattr(inner, "__name__", "task"))


def _unbound(*args: object) -> None:
    raise RuntimeError("the actuator acts only for a controller (Actuator.bind)")


class Actuator(Following):
    """Acts for the controller, which binds itself on creation (`bind`): `changed` asks for a
    pass, `spawn` runs a task in the controller's task group, `forget` drops an instance the
    controller no longer tracks. `drain` (when a data plane is there) waits for a process's
    calls before it is stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        driver: Driver,
        prober: Prober,
        ports: PortBook,
        store: StatusStore,
        clock: Clock,
        policy: Policy,
        backoff: BackoffPolicy,
        gpus: tuple[int, ...],
        base_env: Mapping[str, str],
        owner: str,
        drain: Drain | None = None,
        models: ModelGlue | None = None,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.prober = prober
        self.ports = ports
        self.store = store
        self.clock = clock
        self.policy = policy
        self.backoff = backoff
        self.gpus = gpus
        self.base_env = dict(base_env)
        self.owner = owner
        self.changed: Callable[[], None] = _unbound
        self.spawn: Callable[..., None] = _unbound
        self.forget: Callable[[Runtime], None] = _unbound
        self.drain = drain
        self.models = models
        self._starts = anyio.CapacityLimiter(max(1, settings.max_concurrent_starts))

    def bind(
        self,
        *,
        changed: Callable[[], None],
        spawn: Callable[..., None],
        forget: Callable[[Runtime], None],
    ) -> None:
        self.changed, self.spawn, self.forget = changed, spawn, forget

    async def guarded(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """The one boundary of every per-instance task (start, stop, a rollout's steps,
        watch_exit, probe_loop, reap; the controller runs each through here): an error that
        ends one, or a cancellation nobody asked for, is logged once with its traceback, shown
        as an `InternalError` event of the instance, and becomes an outcome. It never reaches
        the controller's task group, where it would end the loop of every instance."""
        try:
            await task(*args)
        except BaseException as exc:
            if not stray(exc):
                raise
            self._task_failed(task, args, exc)

    def _task_failed(
        self, task: Callable[..., Awaitable[None]], args: tuple[Any, ...], exc: BaseException
    ) -> None:
        """The outcome of a task that failed unexpectedly: after an action the instance is no
        longer busy (the next pass decides again); a follower of a live process (its exit
        watcher or probe loop) follows it again after `FOLLOW_RETRY_SECS`, unless the process
        is being stopped."""
        what = _task_name(task)
        rt = args[0] if args and isinstance(args[0], Runtime) else None
        metrics.TASK_ERRORS.labels(what).inc()
        log.error("%s of %s failed unexpectedly", what, rt.name if rt else "-", exc_info=exc)
        if rt is None:
            return
        self.store.record_event(
            rt.name, "Warning", "InternalError", f"{what} failed: {exc!r}", self.clock.wall()
        )
        record = args[1] if len(args) > 1 and isinstance(args[1], ProcessRecord) else None
        if getattr(task, "func", task) in self._actions():  # it made the instance busy
            rt.busy = None
        elif record is not None and self._followed(rt, record):
            self.spawn(self._follow_again, task, rt, record)
        self.changed()

    def _actions(self) -> tuple[Callable[..., Awaitable[None]], ...]:
        return (self.start, self.stop, self.retire, self.abort_next)

    @staticmethod
    def _followed(rt: Runtime, record: ProcessRecord) -> bool:
        """Whether `record` is still one of the instance's live processes, not being stopped."""
        return rt.role_of(record) is not None and record.handle.alive and not record.stop_requested

    async def _follow_again(
        self, task: Callable[..., Awaitable[None]], rt: Runtime, record: ProcessRecord
    ) -> None:
        await anyio.sleep(FOLLOW_RETRY_SECS)
        if self._followed(rt, record):
            self.spawn(task, rt, record)

    async def start(
        self, rt: Runtime, spec: InstanceSpec, *, explicit: set[int], beside: bool = False
    ) -> None:
        """Spawn `spec`'s process: the instance's current one, or with `beside` the new
        process of a surge rollout (fresh ports, the same GPUs). A failure becomes the
        instance's `Failed` reason (the rollout's, when beside a serving process)."""
        wall = self.clock.wall()
        try:
            async with self._starts:
                cuda = cuda_visible_devices(spec.gpu, self.gpus)
                api_key = None
                if spec.api_key_file is not None:
                    api_key = await anyio.to_thread.run_sync(read_api_key, spec.api_key_file)
                await self._check_model(spec, cuda, wall)
                if beside:
                    assignment = self.ports.assign_next(spec, explicit=explicit)
                else:
                    assignment = self.ports.assign(spec, explicit=explicit)
                argv = self.argv_for(spec, port=assignment.port, prom=assignment.prometheus_port)
                env = build_env(self.base_env, spec, cuda=cuda, owner=self.owner, api_key=api_key)
                log = self.driver.log_path(spec.name, beside=beside)
                log_offset = log_size(log)
                with anyio.CancelScope(shield=True):  # a spawned child is never lost untracked
                    handle = await self.driver.spawn(
                        argv, env, name=spec.name, hash_=spec_hash(spec), log=log
                    )
        except Exception as exc:  # the one boundary: every failure to start is an outcome
            if beside:
                self.ports.release_next(spec.name)
            self._start_failed(rt, spec, exc, wall, beside=beside)
        else:
            record = rt.started(
                ProcessRecord(
                    handle,
                    spec=spec,
                    placement=Placement(assignment.port, assignment.prometheus_port, cuda),
                    now=self.clock.now(),
                    created_at=wall,
                    log_path=log,
                    log_offset=log_offset,
                ),
                beside=beside,
            )
            metrics.ACTIONS.labels("start-next" if beside else "start", "ok").inc()
            if beside:
                serving = rt.current.pid if rt.current is not None else "none"
                reason = "NewProcessStarted"
                message = (
                    f"started pid {handle.pid} on port {assignment.port} for spec "
                    f"{handle.spec_hash}, beside pid {serving}"
                )
            else:
                reason, message = "Started", f"started pid {handle.pid} on port {assignment.port}"
            self.store.record_event(spec.name, "Normal", reason, message, wall)
            self.follow(rt, record)
        finally:
            rt.busy = None
            self.changed()

    async def _check_model(self, spec: InstanceSpec, cuda: str, wall: float) -> None:
        """Refuse a model the binary cannot serve; warn when its weights may not fit."""
        if self.models is None:
            return
        verdict = await self.models.verdict(spec, cuda)
        if verdict.refusal is not None:
            raise PermanentError(UNSUPPORTED_MODEL, verdict.refusal)
        if verdict.warning is not None:
            self.store.record_event(
                spec.name, "Warning", INSUFFICIENT_GPU_MEMORY, verdict.warning, wall
            )

    def _start_failed(
        self, rt: Runtime, spec: InstanceSpec, exc: Exception, wall: float, *, beside: bool
    ) -> None:
        if isinstance(exc, ActionError):
            reason, message = exc.reason, exc.message
        elif isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            # The log, the port book, a model check: whatever needed the disk found it full.
            reason = "DiskFull"
            message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        else:  # a bug or an OS surprise: still an outcome, logged once with its traceback
            reason, message = "StartFailed", f"{type(exc).__name__}: {exc}"
            log.error("starting %s failed unexpectedly", spec.name, exc_info=exc)
        delay = rt.failed(
            reason, message, spec_hash=spec_hash(spec), now=self.clock.now(), policy=self.backoff
        )
        metrics.ACTIONS.labels("start-next" if beside else "start", "failed").inc()
        self.store.record_event(spec.name, "Warning", reason, message, wall)
        log.warning("cannot start %s: %s: %s (retry in %gs)", spec.name, reason, message, delay)
        if beside:
            self._rollout_failed(
                rt,
                "RolloutFailed",
                f"the new process could not start: {reason}: {message}",
                spec_hash(spec),
                wall,
            )

    # ---- rollouts -----------------------------------------------------------------------
    def switch(self, rt: Runtime) -> ProcessRecord | None:
        """Make the rollout's new process the current one, at once (the controller publishes
        the routing table right after this): new calls go to it from now on. Returns the old
        process, which `retire` drains and stops."""
        old = rt.promote()
        if old is not None:
            old.cancel_probes()  # out of routing now: only its stop is left
        self.ports.book_next(rt.name)
        new = rt.current
        assert new is not None
        self._hand_over_log(rt, new, old)
        metrics.ACTIONS.labels("switch", "ok").inc()
        if old is not None:
            message = (
                f"traffic switched from pid {old.pid} (port {old.placement.port}) to pid "
                f"{new.pid} (port {new.placement.port})"
            )
        else:
            message = f"pid {new.pid} took over: the old process was gone"
        self.store.record_event(rt.name, "Normal", "Switched", message, self.clock.wall())
        return old

    def _hand_over_log(self, rt: Runtime, new: ProcessRecord, old: ProcessRecord | None) -> None:
        """The new process's log becomes the instance's; the old one's the first backup."""
        main = self.driver.log_path(rt.name)
        if new.log_path == main:
            return  # adopted as the instance's process: it already writes there
        try:
            moved = hand_over_log(main, new.log_path, backups=self.settings.log_backups)
        except OSError as exc:  # the logs stay where they are; serving is unaffected
            log.warning("cannot hand the log of %s over to its new process: %s", rt.name, exc)
            return
        new.log_path = main
        if old is not None and moved is not None:
            old.log_path = moved

    async def retire(self, rt: Runtime, old: ProcessRecord | None) -> None:
        """Drain the old process of a finished rollout (its calls in flight end, up to
        `stop_grace_secs`), then stop it."""
        try:
            if old is not None:
                how = await self._drain(rt, old)
                if how is not None:
                    message = f"pid {old.pid} left routing and was drained: {how}"
                    self.store.record_event(
                        rt.name, "Normal", "OldProcessDrained", message, self.clock.wall()
                    )
                exit_ = await self._terminate(rt, old, "Replaced")
                self.store.record_event(
                    rt.name,
                    "Normal",
                    "OldProcessStopped",
                    f"stopped pid {old.pid}: {exit_summary(exit_)}",
                    self.clock.wall(),
                )
            metrics.ROLLOUTS.labels("complete").inc()
            new = rt.current
            done = f"pid {new.pid} serves spec {new.spec_hash}" if new is not None else ""
            self.store.record_event(rt.name, "Normal", "RolloutComplete", done, self.clock.wall())
        except Exception:  # the old process may live on: it is reaped at shutdown at the latest
            log.exception("stopping the old process of %s failed", rt.name)
            metrics.ACTIONS.labels("stop", "failed").inc()
        finally:
            rt.busy = None
            self.changed()

    async def abort_next(self, rt: Runtime, action: AbortNext) -> None:
        """Stop a rollout's new process (it never took traffic, so nothing to drain)."""
        try:
            new = rt.next
            if new is not None:
                healthy_for = new.healthy_for(self.clock.now())
                await self._terminate(rt, new, action.reason)
                self.ports.release_next(rt.name)
                wall = self.clock.wall()
                if action.failed:
                    rt.crashed(
                        new, now=self.clock.now(), healthy_for=healthy_for, policy=self.backoff
                    )
                    self._rollout_failed(
                        rt,
                        action.reason,
                        f"{action.message}; retry in {rt.crash.delay:g}s",
                        new.spec_hash,
                        wall,
                    )
                else:
                    metrics.ROLLOUTS.labels("superseded").inc()
                    self.store.record_event(
                        rt.name,
                        "Normal",
                        "NewProcessStopped",
                        f"stopped pid {new.pid}: {STOPPED_BECAUSE[action.reason]}",
                        wall,
                    )
            metrics.ACTIONS.labels("abort-next", "ok").inc()
        except Exception:  # the process may live on: the next pass plans the abort again
            log.exception("stopping the new process of %s failed", rt.name)
            metrics.ACTIONS.labels("abort-next", "failed").inc()
            if rt.next is not None:
                rt.next.stop_requested = False
        finally:
            rt.busy = None
            self.changed()

    # ---- stopping ------------------------------------------------------------------------
    async def stop(self, rt: Runtime, action: Stop) -> None:
        """Stop the instance's current process; a crash-like stop (probes) backs off."""
        try:
            await self._stop(rt, action)
        except Exception:  # the process may live on: the next pass plans the stop again
            log.exception("stopping %s failed", rt.name)
            metrics.ACTIONS.labels("stop", "failed").inc()
            if rt.current is not None:
                rt.current.stop_requested = False
            rt.busy = None
            self.changed()

    async def _stop(self, rt: Runtime, action: Stop) -> None:
        record = rt.current
        if record is None:  # it exited between the plan and now: the next pass decides again
            rt.busy = None
            self.changed()
            return
        healthy_for = record.healthy_for(self.clock.now())
        if not action.crash:
            # It has left routing: the calls it serves finish first (a process that failed
            # its probes is replaced at once, as Kubernetes does).
            how = await self._drain(rt, record)
            if how is not None:
                message = f"pid {record.pid} left routing and was drained: {how}"
                self.store.record_event(rt.name, "Normal", "Drained", message, self.clock.wall())
        await self._terminate(rt, record, action.reason)
        if action.crash:
            rt.crashed(record, now=self.clock.now(), healthy_for=healthy_for, policy=self.backoff)
        if action.reason not in {"Removed", "StoppedByUser"}:
            metrics.RESTARTS.labels(action.reason).inc()
        self.store.record_event(
            rt.name,
            "Normal" if not action.crash else "Warning",
            "Killing",
            f"stopped pid {record.pid}: {action.reason}",
            self.clock.wall(),
        )
        rt.busy = None
        metrics.ACTIONS.labels("stop", "ok").inc()
        if action.forget:
            self.forget(rt)
        self.changed()

    async def _drain(self, rt: Runtime, record: ProcessRecord) -> str | None:
        """Wait, up to `stop_grace_secs`, for the calls in flight to a process that left
        routing to finish; how it ended (None: no data plane to ask)."""
        port = record.placement.port
        if self.drain is None or port is None:
            return None
        backend = Backend(host=self.settings.instance_host, port=port, generation=record.generation)
        drained = False
        with anyio.move_on_after(self.settings.stop_grace_secs):
            await self.drain(backend)
            drained = True
        return "its calls in flight finished" if drained else "stop_grace_secs passed first"

    async def _terminate(self, rt: Runtime, record: ProcessRecord, reason: str) -> ExitInfo:
        """SIGTERM `record`'s group (SIGKILL after the grace period) and note how it ended."""
        record.stop_requested = True
        record.cancel_probes()
        exit_ = await self.driver.stop(record.handle, self.settings.stop_grace_secs)
        exit_ = msgspec.structs.replace(
            exit_, reason=reason, last_lines=self._last_lines(rt, record)
        )
        rt.ended(record, exit_)
        return exit_

    # ---- following a process -------------------------------------------------------------
    def argv_for(self, spec: InstanceSpec, *, port: int, prom: int) -> list[str]:
        """The command line this reconciler launches `spec` with on these ports."""
        prefix = resolve_binary(self.settings.tei_binary, self.settings.tei_protocol)
        return build_argv(prefix, spec, host=self.settings.instance_host, port=port, prom=prom)

    async def reap(self, handle: ProcessHandle) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.watch)
            await self.driver.stop(handle, self.settings.stop_grace_secs)
