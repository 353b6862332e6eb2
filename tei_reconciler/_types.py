"""Shared small types and the seams (Protocols) that let tests inject fakes and a clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the reconciler reads time. Pure code takes `now` as a parameter instead."""

    def now(self) -> float:
        """Seconds on a monotonic scale (never goes backwards)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps shown to users."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()
