"""The runtime directory (`runtime_dir`): where each of its files lives, said once.

It holds the instances' logs (`logs/<name>.log`, read by the REST API, written by the
children; during a surge rollout the new process writes `logs/<name>.next.log` until it takes
over), the sticky port assignments (`ports.json`) and the lock that keeps a second
reconciler off the same instances (`reconciler.lock`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class RuntimeDir(NamedTuple):
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        """An instance's log file; `name` is a DNS-1123 label, so it stays inside `logs`."""
        return self.logs / f"{name}.log"

    def next_log(self, name: str) -> Path:
        """Where a rollout's new process writes until it takes the instance's traffic (then
        it becomes the instance's log): what it writes never mixes with the old process's."""
        return self.logs / f"{name}.next.log"

    @property
    def ports(self) -> Path:
        return self.root / "ports.json"

    @property
    def lock(self) -> Path:
        return self.root / "reconciler.lock"
