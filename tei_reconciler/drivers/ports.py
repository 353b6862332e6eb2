"""Port assignment: explicit ports honoured, missing ones allocated and sticky.

An instance without `port` gets one from `instance_port_range`, and every child gets its own
free `--prometheus-port` (TEI's default 9000 would collide between instances and with the
manager). Assignments are recorded in `<runtime_dir>/ports.json`, written atomically, so an
instance keeps its port across its own restarts and across restarts of the reconciler: clients
and the adoption of running children both rely on that. The file is controller-owned status,
never desired state.

A port held by a process that is not ours fails the instance with `PortInUse`, naming the
holder when the kernel shows it (reading other processes' sockets may need root).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path

import msgspec
import psutil

from tei_reconciler._types import PortRange
from tei_reconciler.atomic import write_atomically
from tei_reconciler.desired.spec import InstanceSpec
from tei_reconciler.errors import PermanentError


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    port: int
    prometheus_port: int


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind `host:port` now (TIME_WAIT leftovers do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str:
    """A human description of who listens on `port` ("pid 123 (nginx)"), or "" if unknown."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return ""
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return ""
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return ""


class PortBook:
    """The sticky port assignments of every instance, persisted in `path`."""

    def __init__(
        self,
        path: Path,
        *,
        host: str,
        instance_range: tuple[int, int],
        prometheus_range: tuple[int, int],
        reserved: Iterable[int] = (),
    ) -> None:
        self.path = path
        self.host = host
        self.instance_range = PortRange(*instance_range)
        self.prometheus_range = PortRange(*prometheus_range)
        self.reserved = frozenset(reserved)
        self._book: dict[str, Assignment] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_bytes())
            self._book = {
                name: Assignment(port=int(v["port"]), prometheus_port=int(v["prometheus_port"]))
                for name, v in raw.get("ports", {}).items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self._book = {}  # a missing or damaged file only costs stickiness

    def _save(self) -> None:
        body = {"ports": {n: msgspec.to_builtins(a) for n, a in sorted(self._book.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(body, indent=2).encode() + b"\n")

    def get(self, name: str) -> Assignment | None:
        return self._book.get(name)

    def names(self) -> set[str]:
        return set(self._book)

    def record(self, name: str, assignment: Assignment) -> None:
        """Remember ports found in use by `name` (an adopted process)."""
        if self._book.get(name) != assignment:
            self._book[name] = assignment
            self._save()

    def release(self, name: str) -> None:
        if self._book.pop(name, None) is not None:
            self._save()

    def _taken_by_others(self, name: str, explicit: Iterable[int]) -> set[int]:
        taken = set(self.reserved) | set(explicit)
        for other, a in self._book.items():
            if other != name:
                taken.update((a.port, a.prometheus_port))
        return taken

    def _booked_by(self, port: int, name: str) -> str | None:
        """The other instance whose assignment holds `port`, if any."""
        for other, a in sorted(self._book.items()):
            if other != name and port in (a.port, a.prometheus_port):
                return other
        return None

    def _pick(
        self,
        kind: str,
        explicit: int | None,
        sticky: int | None,
        span: PortRange,
        taken: set[int],
        *,
        name: str,
    ) -> int:
        if explicit is not None:
            if not port_is_free(self.host, explicit):
                holder = port_holder(explicit)
                by = f" by {holder}" if holder else " by another process"
                other = self._booked_by(explicit, name)
                if other is not None:  # our own instance, on a port it was given automatically
                    by = (
                        f" by instance {other}, which was given it automatically "
                        f"(restart {other} to move it, or choose another {kind})"
                    )
                raise PermanentError("PortInUse", f"{kind} {explicit} is already in use{by}")
            return explicit
        if sticky is not None and sticky not in taken and port_is_free(self.host, sticky):
            return sticky
        for candidate in span.ports():
            if candidate not in taken and port_is_free(self.host, candidate):
                return candidate
        raise PermanentError("PortAllocationFailed", f"no free {kind} in {span}")

    def assign(self, spec: InstanceSpec, *, explicit: Iterable[int] = ()) -> Assignment:
        """Ports for starting `spec` now. `explicit`: ports other desired instances name.

        Raises PermanentError("PortInUse" | "PortAllocationFailed").
        """
        previous = self._book.get(spec.name)
        others = {p for p in explicit if p not in (spec.port, spec.prometheus_port)}
        taken = self._taken_by_others(spec.name, others)
        picked: dict[str, int] = {}
        for field, kind, span in (
            ("port", "port", self.instance_range),
            ("prometheus_port", "prometheus port", self.prometheus_range),
        ):
            sticky = getattr(previous, field) if previous is not None else None
            picked[field] = self._pick(
                kind, getattr(spec, field), sticky, span, taken, name=spec.name
            )
            taken.add(picked[field])
        assignment = Assignment(**picked)
        self.record(spec.name, assignment)
        return assignment
