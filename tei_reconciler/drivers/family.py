"""An instance process's family: everything it started, wherever it went.

A stop signals the process group of the instance's process, which holds its children; a
child that called `setsid()` (a daemon) has left that group and that session, but it still
carries the markers of the environment it inherited, among them the token of the process
that started it (`MARKER_PROCESS`, one per spawn). So a stop signals the group and every
process carrying the token, and waits for both to be gone; two processes of one instance (a
replacement, a duplicate found at boot) have different tokens and never stop each other.

The reconciler is a child subreaper (`become_subreaper`, Linux): an orphan of its instances
(a daemon whose parent exited) is re-parented to it rather than to init, so it stays the
reconciler's to stop, and `reap_orphans` collects the exit status of those that end.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import secrets
import sys
from collections.abc import Container
from functools import cache

import psutil

from tei_reconciler.desired.spec import MARKER_OWNER, MARKER_PROCESS

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_PR_GET_CHILD_SUBREAPER = 37


def new_token() -> str:
    """A token that marks one spawned process and everything it starts."""
    return secrets.token_hex(8)


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Make this process a child subreaper (orphans of its descendants are re-parented to it
    instead of to init). Linux only; False where it is not available."""
    libc = _libc()
    if libc is not None and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
        return True
    errno = ctypes.get_errno()
    log.warning(
        "cannot become a child subreaper (%s): daemons of instances may outlive a crash",
        os.strerror(errno) if errno else "not Linux",
    )
    return False


def is_subreaper() -> bool:
    """Whether this process is a child subreaper (the kernel's answer)."""
    libc = _libc()
    value = ctypes.c_int(0)
    if libc is None or libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return value.value != 0


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def marked(owner: str, token: str) -> list[psutil.Process]:
    """Live processes carrying this owner's marker and this process token."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get(MARKER_PROCESS) == token and env.get(MARKER_OWNER) == owner:
            found.append(proc)
    return found


def signal_family(pgid: int, owner: str, token: str | None, sig: int) -> None:
    """Signal the process group `pgid` and every process carrying `token` outside it, once."""
    kill_group(pgid, sig)
    if token is None:
        return
    for proc in marked(owner, token):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) != pgid:  # the group has it already: never twice
                proc.send_signal(sig)


def family_alive(pgid: int, owner: str, token: str | None) -> bool:
    """Whether anything of the family is left (zombies aside): a process in its group, or one
    carrying its token. One scan of the process table."""
    try:
        os.killpg(pgid, 0)
        group = True
    except (ProcessLookupError, PermissionError):
        group = False
    if not group and token is None:
        return False
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if group and os.getpgid(proc.pid) == pgid:
                return True
            if token is not None:
                env = proc.environ()
                if env.get(MARKER_PROCESS) == token and env.get(MARKER_OWNER) == owner:
                    return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def reap_orphans(leaders: Container[int]) -> int:
    """Collect the exit status of ended children of ours that are not `leaders` (processes we
    spawned, which their own watcher collects): orphans re-parented to this subreaper. Returns
    how many were reaped."""
    if not is_subreaper():
        return 0
    reaped = 0
    try:
        ours = psutil.Process().children()
    except psutil.Error:
        return 0
    for child in ours:
        try:
            if child.pid in leaders or child.status() != psutil.STATUS_ZOMBIE:
                continue
            pid, _ = os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue
        reaped += pid == child.pid
    return reaped
