"""The data plane: Envoy carrying the gRPC port, with the reconciler as its control plane.

Modules: `binary` (which data plane, which Envoy), `translate` (PURE: routing table ->
clusters, endpoints, routes), `lua_auth` (the per-call auth check Envoy runs), `bootstrap`
(PURE: Envoy's fixed configuration), `ads` (PURE: the ADS protocol state machine), `xds` (the
ADS server), `admin` (Envoy's admin interface), `supervisor` (Envoy as a supervised child),
`stats` (Envoy's statistics as the router's metrics and traffic), `envoy` (all of it as a
`DataPlane`), `files` (its private files), `serve` (running either data plane).
"""
