"""The lifecycle of an instance: its phase, and how tei-manager's clients spell it.

A leaf module (it imports nothing of the project), so every layer can speak of phases: the
planner decides them, the controller publishes them, the REST API and the router show them.
"""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """Where an instance is in its lifecycle. Only the planner decides transitions."""

    PENDING = "Pending"  # desired running, no process yet (waiting for a start slot or a port)
    STARTING = "Starting"  # process spawned, startup probe not yet passed
    RUNNING = "Running"  # startup probe passed; liveness probing
    STOPPING = "Stopping"  # SIGTERM sent, waiting for the group to exit
    STOPPED = "Stopped"  # desired stopped and no process
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"  # died or failed liveness; waiting before restart
    FAILED = "Failed"  # no restart fixes it (binary missing, GPU absent, port held): retried slowly


class AnchorStatus(enum.StrEnum):
    """tei-manager's `status` vocabulary (its clients read it)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


#: DESIGN.md section 6: tei-manager's `status` for each phase.
ANCHOR_STATUS: dict[Phase, AnchorStatus] = {
    Phase.PENDING: AnchorStatus.STARTING,
    Phase.STARTING: AnchorStatus.STARTING,
    Phase.RUNNING: AnchorStatus.RUNNING,
    Phase.STOPPING: AnchorStatus.STOPPING,
    Phase.STOPPED: AnchorStatus.STOPPED,
    Phase.CRASH_LOOP_BACK_OFF: AnchorStatus.FAILED,
    Phase.FAILED: AnchorStatus.FAILED,
}
