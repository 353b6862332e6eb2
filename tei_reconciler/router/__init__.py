"""The gRPC router: one port for every instance (tei-manager's multiplexer and plain tei.v1).

Modules: `server` (serve_router), `multiplexer` and `passthrough` (the two protocols),
`arrow` (EmbedArrow RPCs), `relay` (one call to one instance), `routes` (target -> instance),
`pool` (channels), `wire` (raw wrapper splitting), `health` (health and reflection).
Its metrics are declared with the others in `tei_reconciler.metrics`.
"""

from __future__ import annotations

from tei_reconciler.router.server import serve_router

__all__ = ["serve_router"]
