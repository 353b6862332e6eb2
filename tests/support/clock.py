"""The fake clock: time that moves only when a test moves it.

Monotonic time (`now`) starts at 1000 s; wall time is a round epoch plus the same, so both
advance together and steps of a few seconds stay aligned.
"""

from __future__ import annotations

EPOCH = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return EPOCH + self.t

    def advance(self, secs: float) -> None:
        self.t += secs
