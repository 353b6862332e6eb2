"""Envoy's admin interface, reached on a Unix socket that only this user can open.

What the reconciler asks of it: is Envoy initialized (`/ready`), which port did the listener
bind (`/listeners`), how many calls are in flight to an instance (`/clusters`, per host), its
statistics for `GET /metrics` (`/stats/prometheus`), and a graceful drain before a stop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import Any

import httpx

BASE = "http://envoy"
TIMEOUT = httpx.Timeout(2.0)


class Admin:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._client: httpx.AsyncClient | None = None

    def _async(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = httpx.AsyncHTTPTransport(uds=self.socket_path)
            self._client = httpx.AsyncClient(base_url=BASE, transport=transport, timeout=TIMEOUT)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _get(self, path: str) -> httpx.Response | None:
        try:
            return await self._async().get(path)
        except httpx.HTTPError:
            return None

    async def ready(self) -> bool:
        """Envoy is initialized: its listener serves with the routes it was given."""
        response = await self._get("/ready")
        return response is not None and response.status_code == 200

    async def listener_port(self, name: str) -> int | None:
        """The port the listener `name` is bound to (what port 0 turned into)."""
        response = await self._get("/listeners?format=json")
        if response is None or response.status_code != 200:
            return None
        for listener in response.json().get("listener_statuses", []):
            if listener.get("name") == name:
                port = listener.get("local_address", {}).get("socket_address", {})
                value = port.get("port_value")
                return int(value) if value is not None else None
        return None

    async def requests_to(self, addresses: Collection[str]) -> int | None:
        """Calls in flight to the hosts at `addresses` ("host:port"), over every cluster;
        None when Envoy does not answer."""
        response = await self._get("/clusters?format=json")
        if response is None or response.status_code != 200:
            return None
        wanted = {a.replace("[", "").replace("]", "") for a in addresses}
        total = 0
        for cluster in response.json().get("cluster_statuses", []):
            for host in cluster.get("host_statuses", []):
                if _address(host) in wanted:
                    total += _stat(host, "rq_active")
        return total

    async def downstream_requests(self) -> int | None:
        """Calls in flight on the gRPC listener."""
        response = await self._get("/stats?filter=^http\\.grpc\\.downstream_rq_active$")
        if response is None or response.status_code != 200:
            return None
        _, _, value = response.text.strip().partition(": ")
        return int(value) if value.isdigit() else 0

    async def drain_listeners(self) -> None:
        """Stop taking new connections and tell clients to go away (HTTP/2 GOAWAY)."""
        with contextlib.suppress(httpx.HTTPError):
            await self._async().post("/drain_listeners?graceful")

    async def cluster_stats(self) -> str | None:
        """Cluster statistics in Prometheus text form."""
        response = await self._get("/stats/prometheus?filter=%5Ecluster%5C.")
        return response.text if response is not None and response.status_code == 200 else None

    def stats(self) -> str | None:
        """Cluster statistics in Prometheus text form (blocking; called at scrape time)."""
        transport = httpx.HTTPTransport(uds=self.socket_path)
        try:
            with httpx.Client(base_url=BASE, transport=transport, timeout=TIMEOUT) as client:
                response = client.get("/stats/prometheus", params={"filter": "^cluster\\."})
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None


def _address(host: dict[str, Any]) -> str:
    socket = host.get("address", {}).get("socket_address", {})
    return f"{socket.get('address', '')}:{socket.get('port_value', 0)}"


def _stat(host: dict[str, Any], name: str) -> int:
    for stat in host.get("stats", []):
        if stat.get("name") == name:
            return int(stat.get("value", 0))
    return 0
