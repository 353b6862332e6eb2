"""The process driver: spawn, watch, stop and adopt TEI processes.

Every instance runs in its own session (so its own process group): a stop signals the whole
group and every process carrying the spawn's token (family.py), so no grandchild outlives its
instance, not even one that left the group; a terminal's Ctrl-C or the reconciler's own death
never reaches the children. Output goes straight from the child to an append-mode log
file (not through a pipe): a child keeps running and logging when the reconciler is killed,
which is what lets the next reconciler adopt it without a restart.

Children are found again by the markers in their environment (owner digest, instance name,
spec hash, process token). An adopted process is not our child and cannot be waited for; its
exit is watched through a pidfd, or by polling when pidfds are unavailable.

Spawning happens only on the event-loop thread (anyio.open_process), never from a worker
thread: see reconciler-semantics.md on threads and PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

import anyio
import msgspec
import psutil
from anyio.abc import Process

from tei_reconciler._types import Clock, Secret
from tei_reconciler.desired.rules import API_KEY_ENV
from tei_reconciler.desired.spec import (
    MARKER_INSTANCE,
    MARKER_OWNER,
    MARKER_PROCESS,
    MARKER_SPEC_HASH,
)
from tei_reconciler.drivers.family import (
    family_alive,
    new_token,
    reap_orphans,
    signal_family,
)
from tei_reconciler.errors import PermanentError
from tei_reconciler.paths import RuntimeDir
from tei_reconciler.planner.status import ExitInfo

#: exec errors that no retry soon can fix (the file is there but is not a program to run)
_NOT_RUNNABLE = frozenset({errno.ENOEXEC, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG})
_POLL = 0.05  # seconds between checks while a process group winds down


def owner_digest(state_file: Path) -> str:
    """The owner marker: identifies children of the reconciler of this state file."""
    return hashlib.sha256(os.path.abspath(state_file).encode()).hexdigest()[:16]


def exit_info(returncode: int | None, at: float) -> ExitInfo:
    if returncode is None:
        return ExitInfo(code=None, signal=None, at=at, reason="Exited")
    if returncode < 0:
        return ExitInfo(code=None, signal=-returncode, at=at, reason="Killed")
    return ExitInfo(
        code=returncode, signal=None, at=at, reason="Completed" if returncode == 0 else "Error"
    )


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """A running child of this reconciler's owner, found by its markers."""

    pid: int
    instance: str
    spec_hash: str
    token: str | None = None  # its process token (None: started before tokens existed)
    api_key: Secret | None = None  # the API key it was started with (API_KEY)
    port: int | None
    prometheus_port: int | None
    gpu_id: str | None
    argv: tuple[str, ...] = ()  # as the kernel shows it; empty when unreadable


class ProcessHandle:
    """One process group leader, spawned by us (`process`) or adopted (`psutil_proc`), and
    its family: `owner` and `token` mark every process it starts (see family.py). `api_key`
    is the key it was started with, which its probes and its traffic must carry."""

    def __init__(
        self,
        *,
        pid: int,
        spec_hash: str,
        clock: Clock,
        process: Process | None = None,
        psutil_proc: psutil.Process | None = None,
        owner: str = "",
        token: str | None = None,
        api_key: Secret | None = None,
    ) -> None:
        self.pid = pid
        self.spec_hash = spec_hash
        self.owner = owner
        self.token = token
        self.api_key = api_key  # what callers of the process must send (TEI's API_KEY)
        self.adopted = process is None
        self._clock = clock
        self._process = process
        self._psutil = psutil_proc
        self._exited = anyio.Event()
        self.exit: ExitInfo | None = None

    @property
    def started_wall(self) -> float | None:
        """When an adopted process started (epoch seconds), if the kernel says."""
        try:
            return None if self._psutil is None else self._psutil.create_time()
        except psutil.Error:
            return None

    @property
    def alive(self) -> bool:
        return self.exit is None

    async def watch(self) -> ExitInfo:
        """Wait for the leader to exit (run once, in its own task), then reap the group."""
        code: int | None = None
        if self._process is not None:
            code = await self._process.wait()
        else:
            await self._wait_foreign()
        self.exit = exit_info(code, self._clock.wall())
        # Nothing of a dead instance may hold its port, not even a daemon it left behind.
        signal_family(self.pid, self.owner, self.token, signal.SIGKILL)
        self._exited.set()
        return self.exit

    async def _wait_foreign(self) -> None:
        try:
            fd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0:
            try:
                await anyio.wait_readable(fd)
            finally:
                os.close(fd)
            return
        while self._psutil is not None and self._psutil.is_running():
            try:
                if self._psutil.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:  # gone between the two calls
                return
            await anyio.sleep(0.5)  # no pidfd on this kernel: poll the foreign process

    async def wait(self) -> ExitInfo:
        await self._exited.wait()
        assert self.exit is not None
        return self.exit


class Driver(Protocol):
    """The seam between the controller and the OS (tests pass a fake)."""

    def log_path(self, name: str, *, beside: bool = False) -> Path:
        """An instance's log; `beside`: the log of a rollout's new process."""
        ...

    async def spawn(
        self, argv: list[str], env: dict[str, str], *, name: str, hash_: str, log: Path
    ) -> ProcessHandle: ...

    async def stop(self, handle: ProcessHandle, grace: float) -> ExitInfo: ...

    def discover(self) -> list[Found]: ...

    def adopt(self, found: Found) -> ProcessHandle | None: ...

    def reap_orphans(self) -> None: ...


class ProcessDriver:
    """Spawns and stops instance process groups; finds this owner's children."""

    def __init__(self, *, runtime_dir: Path, owner: str, clock: Clock) -> None:
        self.runtime_dir = RuntimeDir(runtime_dir)
        self.owner = owner
        self.clock = clock
        self._spawned: dict[int, ProcessHandle] = {}  # children whose exit we collect ourselves
        self._spawning = 0

    def log_path(self, name: str, *, beside: bool = False) -> Path:
        return self.runtime_dir.next_log(name) if beside else self.runtime_dir.log(name)

    async def spawn(
        self, argv: list[str], env: dict[str, str], *, name: str, hash_: str, log: Path
    ) -> ProcessHandle:
        """Start `argv` in a new session, output appended to `log`.

        Raises PermanentError("BinaryNotFound") when the program cannot be executed.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        token = new_token()
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._spawning += 1
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env={**env, MARKER_PROCESS: token},
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise PermanentError(
                "BinaryNotFound", f"cannot execute {argv[0]!r}: {exc.strerror or exc}"
            ) from exc
        except OSError as exc:
            if exc.errno not in _NOT_RUNNABLE:
                raise
            raise PermanentError(
                "BinaryNotFound", f"cannot execute {argv[0]!r}: {exc.strerror or exc}"
            ) from exc
        finally:
            self._spawning -= 1
            os.close(log_fd)
        handle = ProcessHandle(
            pid=process.pid,
            spec_hash=hash_,
            clock=self.clock,
            process=process,
            owner=self.owner,
            token=token,
            api_key=Secret(env[API_KEY_ENV]) if API_KEY_ENV in env else None,
        )
        self._spawned[process.pid] = handle
        return handle

    async def stop(self, handle: ProcessHandle, grace: float) -> ExitInfo:
        """SIGTERM the family (the group, and every process carrying the handle's token, in
        whatever session), wait up to `grace` for all of it, then SIGKILL it."""
        owner, token = handle.owner, handle.token

        async def gone() -> None:
            await handle.wait()
            while family_alive(handle.pid, owner, token):  # noqa: ASYNC110 - no event for it
                await anyio.sleep(_POLL)

        signal_family(handle.pid, owner, token, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await gone()
        if handle.alive or family_alive(handle.pid, owner, token):
            signal_family(handle.pid, owner, token, signal.SIGKILL)
            with anyio.move_on_after(10):
                await gone()
        exit_ = await handle.wait()
        self.reap_orphans()
        return exit_

    def reap_orphans(self) -> None:
        """Collect the orphans re-parented to this (subreaper) process that have ended."""
        if self._spawning:
            return  # a child being spawned may end before its handle exists: look again later
        for pid in [pid for pid, h in self._spawned.items() if not h.alive]:
            del self._spawned[pid]  # its watcher has collected it
        reap_orphans(self._spawned)

    def discover(self) -> list[Found]:
        """Running group leaders whose markers name this owner: of the processes sharing one
        process token (a process and the daemons it left), the one that started first."""
        found: list[Found] = []
        starts: dict[int, float] = {}
        for proc in psutil.process_iter(["pid", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != proc.pid:
                    continue
                env = proc.environ()
                if env.get(MARKER_OWNER) != self.owner or MARKER_INSTANCE not in env:
                    continue
                cmdline = proc.cmdline()
                started = proc.create_time()
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
            found.append(
                Found(
                    pid=proc.pid,
                    instance=env[MARKER_INSTANCE],
                    spec_hash=env.get(MARKER_SPEC_HASH, ""),
                    token=env.get(MARKER_PROCESS),
                    api_key=Secret(env[API_KEY_ENV]) if API_KEY_ENV in env else None,
                    port=_flag_int(cmdline, "--port"),
                    prometheus_port=_flag_int(cmdline, "--prometheus-port"),
                    gpu_id=env.get("CUDA_VISIBLE_DEVICES"),
                    argv=tuple(cmdline),
                )
            )
            starts[proc.pid] = started
        return _first_of_each_token(found, starts)

    def adopt(self, found: Found) -> ProcessHandle | None:
        try:
            proc = psutil.Process(found.pid)
        except psutil.Error:
            return None
        return ProcessHandle(
            pid=found.pid,
            spec_hash=found.spec_hash,
            clock=self.clock,
            psutil_proc=proc,
            owner=self.owner,
            token=found.token,
            api_key=found.api_key,
        )


def _first_of_each_token(found: list[Found], starts: dict[int, float]) -> list[Found]:
    """One process per process token: the first started (the instance's own process; the
    others are daemons it left, stopped with it)."""
    first: dict[str, Found] = {}
    kept: list[Found] = []
    for one in sorted(found, key=lambda f: (starts[f.pid], f.pid)):
        if one.token is None:
            kept.append(one)
        elif one.token not in first:
            first[one.token] = one
            kept.append(one)
    return kept


def _flag_int(argv: list[str], flag: str) -> int | None:
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == flag and i + 1 < len(argv) else None
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        if value is not None:
            with contextlib.suppress(ValueError):
                return int(value)
    return None
