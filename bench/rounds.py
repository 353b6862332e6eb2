"""Comparing paths on a noisy machine: interleaved rounds, per-round figures, their median.

Other jobs on a shared machine slow everything down for seconds at a time. A benchmark that
measures path A, then path B, compares two different machines. So every comparison here runs
in rounds; within a round the paths take turns in small slices (the order rotating, so no path
always follows the same one), and each round yields one figure per path (its p50, its CPU per
call). A path's result is the median of its per-round figures, with their spread (the lowest
and highest round); a comparison of two paths (a ratio, a difference) is taken within each
round first, on figures measured under the same load, and then its median over the rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` starting at position `by` (modulo its length)."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


@dataclass(frozen=True)
class Spread:
    """The median of per-round figures and the lowest and highest of them."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, fmt: Callable[[float], str]) -> str:
        return f"{fmt(self.median)} [{fmt(self.low)} to {fmt(self.high)}]"


def ms(secs: float) -> str:
    return f"{secs * 1e3:.2f} ms"


def signed_ms(secs: float) -> str:
    return f"{secs * 1e3:+.2f} ms"


def percent(ratio: float) -> str:
    """A ratio as a signed percentage: 1.04 -> "+4.0 %"."""
    return f"{(ratio - 1) * 100:+.1f} %"
