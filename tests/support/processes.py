"""The processes a reconciler owns, as the kernel shows them: whatever carries its markers
(owner digest, instance name) in its environment, whichever session or group it is in."""

from __future__ import annotations

import psutil

from tei_reconciler.desired.spec import MARKER_INSTANCE, MARKER_OWNER


def children(
    owner: str, instance: str | None = None, *, data_plane: bool = False
) -> list[psutil.Process]:
    """Live instance processes carrying this reconciler's owner marker (optionally one
    instance's); with `data_plane`, its Envoy too."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get(MARKER_OWNER) != owner or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if MARKER_INSTANCE not in env and not (data_plane and instance is None):
                continue
            if instance is None or env.get(MARKER_INSTANCE) == instance:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def by_instance(owner: str) -> dict[str, list[int]]:
    """The pids of this owner's live processes, per instance marker."""
    found: dict[str, list[int]] = {}
    for proc in children(owner):
        try:
            name = proc.environ().get(MARKER_INSTANCE, "")
        except psutil.Error:
            continue
        found.setdefault(name, []).append(proc.pid)
    return found
