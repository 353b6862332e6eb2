"""The actuator: carries out the planner's Start and Stop actions, and follows each process.

It is the one boundary where acting on the world can fail: every error of a start becomes an
outcome (phase `Failed` with a reason, retried on a slow curve), every exit becomes data
(`last_exit`, crash backoff), every probe result becomes data (consecutive failures,
readiness). It never decides what to do next; it records what happened and asks the
controller for another pass.
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
from tei_reconciler.control.models import ModelGlue
from tei_reconciler.control.runtime import Placement, Probed, Runtime
from tei_reconciler.desired.spec import InstanceSpec, spec_hash
from tei_reconciler.drivers.command import build_argv, build_env, read_api_key, resolve_binary
from tei_reconciler.drivers.gpus import cuda_visible_devices
from tei_reconciler.drivers.logtail import last_lines, log_size
from tei_reconciler.drivers.ports import PortBook
from tei_reconciler.drivers.probe import ProbeOutcome, Prober, ProbeTarget, probe_forever
from tei_reconciler.drivers.process import Driver, ProcessHandle
from tei_reconciler.errors import ActionError, PermanentError
from tei_reconciler.planner.backoff import BackoffPolicy, delay_for, record_crash
from tei_reconciler.planner.observed import Failure
from tei_reconciler.planner.plan import Stop
from tei_reconciler.planner.policy import Policy
from tei_reconciler.planner.status import ExitInfo, ProbeResult, exit_summary
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore
from tei_reconciler.tasks import scoped, stray

log = logging.getLogger(__name__)

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
FOLLOW_RETRY_SECS = 1.0  # before following a process again after its follower failed

#: The data plane's drain: returns once no new call reaches the instance and its calls in
#: flight have ended (routing.DataPlane.drain).
Drain = Callable[[str], Awaitable[None]]


def _task_name(task: Callable[..., object]) -> str:
    inner = getattr(task, "func", task)  # a functools.partial names its function
    return str(getattr(inner, "__name__", "task"))


def _unbound(*args: object) -> None:
    raise RuntimeError("the actuator acts only for a controller (Actuator.bind)")


class Actuator:
    """Acts for the controller, which binds itself on creation (`bind`): `changed` asks for a
    pass, `spawn` runs a task in the controller's task group, `forget` drops an instance the
    controller no longer tracks. `drain` (when a data plane is there) waits for an instance's
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
        """The one boundary of every per-instance task (start, stop, watch_exit, probe_loop,
        reap; the controller runs each through here): an error that ends one, or a
        cancellation nobody asked for, is logged once with its traceback, shown as an
        `InternalError` event of the instance, and becomes an outcome. It never reaches the
        controller's task group, where it would end the loop of every instance."""
        try:
            await task(*args)
        except BaseException as exc:
            if not stray(exc):
                raise
            self._task_failed(task, args, exc)

    def _task_failed(
        self, task: Callable[..., Awaitable[None]], args: tuple[Any, ...], exc: BaseException
    ) -> None:
        """The outcome of a task that failed unexpectedly: after a start or a stop the
        instance is no longer busy (the next pass decides again); a follower of the current
        process (its exit watcher or probe loop) follows it again after `FOLLOW_RETRY_SECS`,
        unless the process is being stopped."""
        what = _task_name(task)
        rt = args[0] if args and isinstance(args[0], Runtime) else None
        metrics.TASK_ERRORS.labels(what).inc()
        log.error("%s of %s failed unexpectedly", what, rt.name if rt else "-", exc_info=exc)
        if rt is None:
            return
        self.store.record_event(
            rt.name, "Warning", "InternalError", f"{what} failed: {exc!r}", self.clock.wall()
        )
        handle = args[1] if len(args) > 1 and isinstance(args[1], ProcessHandle) else None
        if getattr(task, "func", task) in (self.start, self.stop):  # it made the instance busy
            rt.busy = None
        elif handle is not None and rt.handle is handle and handle.alive and not rt.stop_requested:
            self.spawn(self._follow_again, task, rt, handle, *args[2:])
        self.changed()

    async def _follow_again(
        self, task: Callable[..., Awaitable[None]], rt: Runtime, handle: ProcessHandle, *rest: Any
    ) -> None:
        await anyio.sleep(FOLLOW_RETRY_SECS)
        if rt.handle is handle and handle.alive and not rt.stop_requested:
            self.spawn(task, rt, handle, *rest)

    def follow(self, rt: Runtime, handle: ProcessHandle, spec: InstanceSpec | None) -> None:
        """Watch a new (spawned or adopted) process: its exit and its health."""
        self.spawn(self.watch_exit, rt, handle)
        self.spawn(self.probe_loop, rt, handle, spec)

    async def start(self, rt: Runtime, spec: InstanceSpec, *, explicit: set[int]) -> None:
        """Spawn `spec`'s process; a failure becomes the instance's `Failed` reason."""
        wall = self.clock.wall()
        try:
            async with self._starts:
                cuda = cuda_visible_devices(spec.gpu, self.gpus)
                api_key = None
                if spec.api_key_file is not None:
                    api_key = await anyio.to_thread.run_sync(read_api_key, spec.api_key_file)
                await self._check_model(spec, cuda, wall)
                assignment = self.ports.assign(spec, explicit=explicit)
                argv = self.argv_for(spec, port=assignment.port, prom=assignment.prometheus_port)
                env = build_env(self.base_env, spec, cuda=cuda, owner=self.owner, api_key=api_key)
                log_offset = log_size(self.driver.log_path(spec.name))
                with anyio.CancelScope(shield=True):  # a spawned child is never lost untracked
                    handle = await self.driver.spawn(
                        argv, env, name=spec.name, hash_=spec_hash(spec)
                    )
        except Exception as exc:  # the one boundary: every failure to start is an outcome
            self._start_failed(rt, spec, exc, wall)
        else:
            rt.started(
                handle,
                spec=spec,
                placement=Placement(assignment.port, assignment.prometheus_port, cuda),
                log_offset=log_offset,
                now=self.clock.now(),
                wall=wall,
            )
            metrics.ACTIONS.labels("start", "ok").inc()
            self.store.record_event(
                spec.name,
                "Normal",
                "Started",
                f"started pid {handle.pid} on port {assignment.port}",
                wall,
            )
            self.follow(rt, handle, spec)
        finally:
            rt.busy = None
            self.changed()

    async def _check_model(self, spec: InstanceSpec, cuda: str, wall: float) -> None:
        """Refuse a model the binary cannot serve; warn when its weights may not fit."""
        if self.models is None:
            return
        verdict = await self.models.verdict(spec, cuda)
        if verdict.refusal is not None:
            raise PermanentError("UnsupportedModel", verdict.refusal)
        if verdict.warning is not None:
            self.store.record_event(
                spec.name, "Warning", "InsufficientGPUMemory", verdict.warning, wall
            )

    def _start_failed(self, rt: Runtime, spec: InstanceSpec, exc: Exception, wall: float) -> None:
        if isinstance(exc, ActionError):
            reason, message = exc.reason, exc.message
        elif isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            # The log, the port book, a model check: whatever needed the disk found it full.
            reason = "DiskFull"
            message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        else:  # a bug or an OS surprise: still an outcome, logged once with its traceback
            reason, message = "StartFailed", f"{type(exc).__name__}: {exc}"
            log.error("starting %s failed unexpectedly", spec.name, exc_info=exc)
        rt.failures += 1
        delay = delay_for(rt.failures, self.backoff)
        rt.failure = Failure(
            reason=reason,
            message=message,
            retry_at=self.clock.now() + delay,
            spec_hash=spec_hash(spec),
        )
        metrics.ACTIONS.labels("start", "failed").inc()
        self.store.record_event(spec.name, "Warning", reason, message, wall)
        log.warning("cannot start %s: %s: %s (retry in %gs)", spec.name, reason, message, delay)

    async def stop(self, rt: Runtime, action: Stop) -> None:
        """Stop the instance's process group; a crash-like stop (probes) backs off."""
        try:
            await self._stop(rt, action)
        except Exception:  # the process may live on: the next pass plans the stop again
            log.exception("stopping %s failed", rt.name)
            metrics.ACTIONS.labels("stop", "failed").inc()
            rt.stop_requested = False
            rt.busy = None
            self.changed()

    async def _stop(self, rt: Runtime, action: Stop) -> None:
        handle = rt.handle
        if handle is None:  # it exited between the plan and now: the next pass decides again
            rt.busy = None
            self.changed()
            return
        rt.stop_requested = True
        rt.cancel_probes()
        healthy_for = rt.healthy_for(self.clock.now())
        if self.drain is not None and not action.crash:
            # The instance has left routing: let the calls it serves finish (a process that
            # failed its probes is replaced at once, as Kubernetes does).
            with anyio.move_on_after(self.settings.stop_grace_secs):
                await self.drain(rt.name)
        exit_ = await self.driver.stop(handle, self.settings.stop_grace_secs)
        rt.ended(
            msgspec.structs.replace(exit_, reason=action.reason, last_lines=self._last_lines(rt))
        )
        if action.crash:
            rt.crash = record_crash(
                rt.crash,
                now=self.clock.now(),
                healthy_for=healthy_for,
                spec_hash=handle.spec_hash,
                policy=self.backoff,
            )
        if action.reason not in {"Removed", "StoppedByUser"}:
            metrics.RESTARTS.labels(action.reason).inc()
        self.store.record_event(
            rt.name,
            "Normal" if not action.crash else "Warning",
            "Killing",
            f"stopped pid {handle.pid}: {action.reason}",
            self.clock.wall(),
        )
        rt.busy = None
        metrics.ACTIONS.labels("stop", "ok").inc()
        if action.forget:
            self.forget(rt)
        self.changed()

    async def watch_exit(self, rt: Runtime, handle: ProcessHandle) -> None:
        exit_ = await handle.watch()
        if rt.handle is not handle or rt.stop_requested:
            return  # a stop we asked for: `_stop` does the bookkeeping
        self.on_crash(rt, handle, exit_)

    def on_crash(self, rt: Runtime, handle: ProcessHandle, exit_: ExitInfo) -> None:
        now = self.clock.now()
        healthy_for = rt.healthy_for(now)
        exit_ = msgspec.structs.replace(exit_, last_lines=self._last_lines(rt))
        rt.ended(exit_)
        rt.crash = record_crash(
            rt.crash,
            now=now,
            healthy_for=healthy_for,
            spec_hash=handle.spec_hash,
            policy=self.backoff,
        )
        metrics.RESTARTS.labels("Crashed").inc()
        how = exit_summary(exit_)
        last = f': "{exit_.last_lines[-1]}"' if exit_.last_lines else ""
        self.store.record_event(
            rt.name,
            "Warning",
            "BackOff",
            f"pid {handle.pid} {how}{last}; restart in {rt.crash.delay:g}s",
            self.clock.wall(),
        )
        log.warning("%s: pid %d %s; restart in %gs", rt.name, handle.pid, how, rt.crash.delay)
        self.changed()

    def _last_lines(self, rt: Runtime) -> tuple[str, ...]:
        """The end of what the process that just ended wrote (a bounded read of its log)."""
        return last_lines(self.driver.log_path(rt.name), since=rt.log_offset)

    async def probe_loop(
        self, rt: Runtime, handle: ProcessHandle, spec: InstanceSpec | None
    ) -> None:
        """Probe `handle` until it is replaced; results go into `rt` and may mark dirty."""
        port = rt.placement.port
        if port is None or rt.handle is not handle:
            return  # it exited (or was replaced) before this task began: nothing to cancel us
        policy = self.policy.for_instance(spec)

        def report(outcome: ProbeOutcome) -> None:
            if rt.handle is not handle:
                return
            wall = self.clock.wall()
            rt.record_probe(
                ProbeResult(
                    at=wall, ok=outcome.ok, latency_ms=outcome.latency_ms, message=outcome.message
                )
            )
            if outcome.refused:
                self.on_refused(rt, handle, outcome.message, wall)
            elif self.on_probe(rt, outcome.ok, outcome.message, wall):
                self.changed()

        target = ProbeTarget(
            name=rt.name,
            pid=handle.pid,
            host=self.settings.instance_host,
            port=port,
            api_key=handle.api_key,
        )
        with scoped(anyio.CancelScope()) as scope:
            rt.probe_scope = scope
            await probe_forever(
                self.prober,
                target,
                interval=policy.health_interval_secs,
                within=policy.health_timeout_secs,
                started=lambda: rt.startup_ok,
                report=report,
            )

    def on_refused(self, rt: Runtime, handle: ProcessHandle, message: str, wall: float) -> None:
        """The process refused the probe's credentials: no probe will ever pass, so waiting
        out the startup timeout would only hide why. It is stopped and the instance fails
        with the reason `Unauthenticated`, retried on the slow curve."""
        if rt.failure is not None and rt.failure.pid == handle.pid:
            return  # already condemned: the stop is on its way
        if handle.api_key is None:
            why = "it requires an API key: set api_key_file (never --api-key in extra_args)"
        else:
            why = "it runs with another API key than the one it was started with"
        rt.failures += 1
        delay = delay_for(rt.failures, self.backoff)
        rt.failure = Failure(
            reason="Unauthenticated",
            message=f"the instance refused the probe ({message}): {why}",
            retry_at=self.clock.now() + delay,
            spec_hash=handle.spec_hash,
            pid=handle.pid,
        )
        metrics.PROBE_FAILURES.labels("startup" if not rt.startup_ok else "liveness").inc()
        self.store.record_event(rt.name, "Warning", "Unauthenticated", rt.failure.message, wall)
        log.warning("%s: %s (retry in %gs)", rt.name, rt.failure.message, delay)
        self.changed()

    def on_probe(self, rt: Runtime, ok: bool, message: str, wall: float) -> bool:
        """Fold one probe result into the runtime; True when a pass should look."""
        threshold = self.policy.for_instance(rt.spec).failure_threshold
        verdict = rt.probed(ok, threshold=threshold, now=self.clock.now(), wall=wall)
        if verdict is Probed.STARTUP_FAILED:
            metrics.PROBE_FAILURES.labels("startup").inc()
        elif verdict is Probed.STARTED:
            self.store.record_event(rt.name, "Normal", "Ready", "startup probe succeeded", wall)
        elif verdict is Probed.FAILED:
            metrics.PROBE_FAILURES.labels("liveness").inc()
            self.store.record_event(
                rt.name, "Warning", "Unhealthy", f"liveness probe failed: {message}", wall
            )
        # A recovery needs a pass too: it publishes the failure count back at 0.
        return verdict in (Probed.STARTED, Probed.RECOVERED, Probed.FAILED)

    def argv_for(self, spec: InstanceSpec, *, port: int, prom: int) -> list[str]:
        """The command line this reconciler launches `spec` with on these ports."""
        prefix = resolve_binary(self.settings.tei_binary, self.settings.tei_protocol)
        return build_argv(prefix, spec, host=self.settings.instance_host, port=port, prom=prom)

    async def reap(self, handle: ProcessHandle) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.watch)
            await self.driver.stop(handle, self.settings.stop_grace_secs)
