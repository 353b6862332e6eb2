"""Envoy as a supervised child, like an instance.

Envoy runs in its own process group with its output appended to
`<runtime_dir>/logs/dataplane.envoy.log`, and carries markers in its environment (owner, data
plane, bootstrap digest) so that a reconciler started later finds it: with `on_shutdown =
"keep"` Envoy keeps serving while no reconciler runs, and the next one adopts it (and programs
it again over ADS) when its bootstrap is still the one it would write, or replaces it.

An Envoy that exits on its own is an event and a metric, and is started again at once, then
after a growing delay if it keeps exiting (the instances' crash-loop curve, on a shorter
scale). On shutdown it stops taking connections (HTTP/2 GOAWAY), lets running calls finish
within the grace period, and is stopped, unless it is kept.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import psutil
from anyio.abc import TaskStatus

from tei_reconciler import metrics
from tei_reconciler._types import Clock
from tei_reconciler.dataplane.admin import Admin
from tei_reconciler.desired.spec import MARKER_OWNER, MARKER_SPEC_HASH
from tei_reconciler.drivers.family import kill_group
from tei_reconciler.drivers.logrotate import rotate_log
from tei_reconciler.drivers.process import ProcessDriver, ProcessHandle
from tei_reconciler.errors import DataPlaneError
from tei_reconciler.planner.backoff import BackoffPolicy, CrashLoop, record_crash
from tei_reconciler.planner.status import ExitInfo
from tei_reconciler.store import StatusStore

log = logging.getLogger(__name__)

MARKER_DATA_PLANE = "TEI_RECONCILER_DATA_PLANE"
LOG_NAME = "dataplane.envoy"  # never an instance's log: instance names have no "."
START_DEADLINE_SECS = 60.0
RESTART_BACKOFF = BackoffPolicy(initial=0.25, maximum=30.0, reset_after=60.0)
#: "[2026-01-01 00:00:00.000][123][critical][main] [source/server/server.cc:449] "
_ENVOY_PREFIX = re.compile(r"^\[[^\]]*\]\[\d+\]\[\w+\]\[\w+\] \[[^\]]*\] ")
_POLL = 0.05  # seconds between admin checks while Envoy starts or drains
_ROTATE_EVERY = 5.0


def envoy_argv(binary: str, bootstrap: str) -> list[str]:
    return [
        binary,
        "-c",
        bootstrap,
        "--disable-hot-restart",  # several Envoys per host; no shared memory between them
        "--drain-strategy",
        "immediate",
        "--drain-time-s",
        "5",
        "--log-level",
        os.environ.get("TEI_ENVOY_LOG_LEVEL", "info"),
        # A rejected update is logged with the resource quoted whole, an instance's API key
        # included; the reconciler reports rejections itself, the keys masked (`ads.redact`).
        "--component-log-level",
        "config:error",
    ]


def envoy_env(base: Mapping[str, str], *, owner: str, digest: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("TEI_RECONCILER_")}
    env[MARKER_OWNER] = owner
    env[MARKER_DATA_PLANE] = "envoy"
    env[MARKER_SPEC_HASH] = digest
    return env


def discover(owner: str) -> list[tuple[int, str]]:
    """(pid, bootstrap digest) of the running Envoys of this owner."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != proc.pid:
                continue
            env = proc.environ()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if env.get(MARKER_OWNER) == owner and env.get(MARKER_DATA_PLANE) == "envoy":
            found.append((proc.pid, env.get(MARKER_SPEC_HASH, "")))
    return found


class EnvoySupervisor:
    """Keeps one Envoy running with one bootstrap."""

    def __init__(
        self,
        *,
        binary: str,
        bootstrap: str,
        digest: str,
        driver: ProcessDriver,
        admin: Admin,
        owner: str,
        store: StatusStore,
        clock: Clock,
        keep: bool,
        stop_grace_secs: float,
        log_max_bytes: int,
        log_backups: int,
        base_env: Mapping[str, str] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.digest = digest
        self.driver = driver
        self.admin = admin
        self.owner = owner
        self.store = store
        self.clock = clock
        self.keep = keep
        self.stop_grace_secs = stop_grace_secs
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.on_change = on_change
        self.handle: ProcessHandle | None = None
        self.up = False
        self.restarts = 0
        self.adopted = False
        self._crash = CrashLoop()
        self._ready_since = 0.0

    @property
    def log_path(self) -> Path:
        return self.driver.log_path(LOG_NAME)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start (or adopt) Envoy; report started once it serves; keep it serving."""
        handle = await self._adopt() or await self._spawn()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._rotate_logs)
                exited = await self._until_ready(handle)
                if exited is not None:
                    raise DataPlaneError(
                        f"Envoy exited at start ({_how(exited)}): {self._log_tail()}"
                    )
                self._set_up(True)
                task_status.started()
                while True:
                    exited = await handle.watch()
                    self._set_up(False)
                    handle = await self._restart(handle, exited)
        finally:
            with anyio.CancelScope(shield=True):
                self._set_up(False)
                await self._shutdown()
                await self.admin.aclose()

    def _set_up(self, up: bool) -> None:
        self.up = up
        if up:
            self._ready_since = self.clock.now()
        metrics.DATA_PLANE_UP.labels("envoy").set(1 if up else 0)
        self.on_change()

    async def _adopt(self) -> ProcessHandle | None:
        """Take over the Envoy a previous reconciler left running, if it has our bootstrap;
        stop the others (they hold the port, or run another configuration)."""
        keep: ProcessHandle | None = None
        for pid, digest in discover(self.owner):
            try:
                handle = ProcessHandle(
                    pid=pid, spec_hash=digest, clock=self.clock, psutil_proc=psutil.Process(pid)
                )
            except psutil.Error:
                continue
            if keep is None and digest == self.digest:
                keep = handle
                log.info("adopted Envoy (pid %d)", pid)
                self._event("Normal", "DataPlaneAdopted", f"adopted running Envoy {pid}")
                continue
            log.info("replacing Envoy (pid %d): it runs another configuration", pid)
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle.watch)
                await self.driver.stop(handle, self.stop_grace_secs)
        self.handle = keep
        self.adopted = keep is not None
        return keep

    async def _spawn(self) -> ProcessHandle:
        argv = envoy_argv(self.binary, self.bootstrap)
        env = envoy_env(self.base_env, owner=self.owner, digest=self.digest)
        with anyio.CancelScope(shield=True):  # a spawned child is never lost untracked
            try:
                handle = await self.driver.spawn(
                    argv, env, name=LOG_NAME, hash_=self.digest, log=self.log_path
                )
            except Exception as exc:
                raise DataPlaneError(f"cannot start Envoy: {exc}") from exc
        self.handle = handle
        log.info("started Envoy (pid %d), log %s", handle.pid, self.log_path)
        return handle

    async def _until_ready(self, handle: ProcessHandle) -> ExitInfo | None:
        """Poll the admin interface until Envoy is initialized; its exit if it died first
        (or did not get ready within START_DEADLINE_SECS, and was killed)."""
        exited: list[ExitInfo] = []
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                exited.append(await handle.watch())
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            with anyio.move_on_after(START_DEADLINE_SECS) as deadline:
                while not await self.admin.ready():  # noqa: ASYNC110 - polled: no event exists
                    await anyio.sleep(_POLL)
            if deadline.cancelled_caught:
                kill_group(handle.pid, signal.SIGKILL)
                await handle.wait()
            tg.cancel_scope.cancel()
        return exited[0] if exited else None

    async def _restart(self, old: ProcessHandle, exited: ExitInfo) -> ProcessHandle:
        now = self.clock.now()
        self._crash = record_crash(
            self._crash,
            now=now,
            healthy_for=now - self._ready_since,
            spec_hash=self.digest,
            policy=RESTART_BACKOFF,
        )
        delay = self._crash.delay
        self.restarts += 1
        metrics.DATA_PLANE_RESTARTS.inc()
        message = f"Envoy (pid {old.pid}) exited ({_how(exited)}); restarting in {delay:g}s"
        log.error("%s", message)
        self._event("Warning", "DataPlaneExited", message)
        while True:
            await anyio.sleep(delay)
            handle = await self._spawn()
            exited_again = await self._until_ready(handle)
            if exited_again is None:
                self._set_up(True)
                self._event("Normal", "DataPlaneReady", f"Envoy (pid {handle.pid}) serves again")
                return handle
            delay = min(RESTART_BACKOFF.maximum, max(delay * 2, RESTART_BACKOFF.initial))
            self.restarts += 1
            metrics.DATA_PLANE_RESTARTS.inc()
            message = f"Envoy exited at start ({_how(exited_again)}): {self._log_tail()}"
            log.error("%s; retrying in %gs", message, delay)
            self._event("Warning", "DataPlaneExited", message)

    async def _shutdown(self) -> None:
        handle = self.handle
        if handle is None or handle.exit is not None:
            return
        if self.keep:
            log.info("leaving Envoy (pid %d) running for the next reconciler", handle.pid)
            return
        await self.admin.drain_listeners()
        with anyio.move_on_after(min(self.stop_grace_secs, 5.0)):
            while (await self.admin.downstream_requests() or 0) > 0:  # noqa: ASYNC110
                await anyio.sleep(_POLL)
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.watch)
            await self.driver.stop(handle, min(self.stop_grace_secs, 5.0))
        log.info("stopped Envoy (pid %d)", handle.pid)

    async def _rotate_logs(self) -> None:
        while True:
            await anyio.sleep(_ROTATE_EVERY)
            try:
                rotation = await anyio.to_thread.run_sync(
                    lambda: rotate_log(
                        self.log_path, max_bytes=self.log_max_bytes, backups=self.log_backups
                    )
                )
            except OSError as exc:
                log.warning("cannot rotate the Envoy log: %s", exc)
                continue
            if rotation.error:
                log.warning("the Envoy log was emptied without a backup: %s", rotation.error)

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.store.record_event("", type_, reason, message, self.clock.wall())

    def _log_tail(self) -> str:
        """Why Envoy stopped, from its log: its last critical line (else its last error or
        last line), without Envoy's timestamp and source prefix."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"see {self.log_path}"
        for level in ("critical", "error"):
            found = [line for line in text if f"][{level}][" in line]
            if found:
                return _ENVOY_PREFIX.sub("", found[-1]).strip()
        return _ENVOY_PREFIX.sub("", text[-1]).strip() if text else f"see {self.log_path}"


def _how(exit_: ExitInfo) -> str:
    if exit_.signal is not None:
        return f"signal {exit_.signal}"
    return f"code {exit_.code}" if exit_.code is not None else "exited"
