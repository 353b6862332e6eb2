"""Shared small types and the seams (Protocols) that let tests inject fakes and a clock."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from typing import NamedTuple, Protocol


class PortRange(NamedTuple):
    """A half-open range of ports [start, end), as `instance_port_range` is written."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"

    def covers(self, port: int) -> bool:
        return self.start <= port < self.end

    def ports(self) -> range:
        """Every port of the range, lowest first (the order automatic ones are given in)."""
        return range(self.start, self.end)

    def left_for_automatic(self, explicit: Iterable[int]) -> int:
        """How many ports of the range remain to assign when `explicit` ones are named."""
        return len(self.ports()) - len({p for p in explicit if self.covers(p)})


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


class Secret:
    """A credential that must never be shown: its repr and str hide it, so a log line, a
    traceback or a status that includes it by mistake shows `***`, and msgspec refuses to
    encode it. `reveal()` is the one way to the value (to send it, or to pass it to a child)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)
