"""ASGI middleware that authenticates every REST request except the exempt paths.

Credentials come from three places: the client certificate of our own TLS handshake
(`tls.peer_certificate`), `X-SSL-Client-Cert` (honoured only when the TCP peer is a trusted
proxy, and verified against the CA like any certificate), and `Authorization: Bearer`.
A refusal is the API's JSON error envelope: 401 `UNAUTHORIZED` (no or bad credentials) or 403
`FORBIDDEN` (a valid caller who is not allowed). The caller's `Principal` is left in
`scope["user"]` for handlers and access logs.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from tei_reconciler.api.errors import error_response
from tei_reconciler.auth.principal import Verdict
from tei_reconciler.auth.providers import Authenticator, Credentials, TokenProvider
from tei_reconciler.auth.tls import peer_certificate

PROXY_CERT_HEADER = b"x-ssl-client-cert"


def is_exempt(path: str, exempt_paths: Sequence[str]) -> bool:
    """Exact match; an entry ending in "/" exempts everything below it."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in exempt_paths)


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, *, authenticator: Authenticator, exempt_paths: Sequence[str] = ()
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.exempt_paths = tuple(exempt_paths)
        self._bearer = any(isinstance(p, TokenProvider) for p in authenticator.providers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_exempt(
            scope["path"], self.exempt_paths
        ):
            await self.app(scope, receive, send)
            return
        decision = self.authenticator.decide(credentials_of(scope))
        if decision.verdict is Verdict.ALLOWED:
            scope["user"] = decision.principal
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; closing before accept answers 403
            await send({"type": "websocket.close", "code": 1008, "reason": decision.reason})
            return
        if decision.verdict is Verdict.DENIED:
            response = error_response(403, "FORBIDDEN", decision.reason)
        else:
            headers = {"WWW-Authenticate": 'Bearer realm="tei-reconciler"'} if self._bearer else {}
            response = error_response(401, "UNAUTHORIZED", decision.reason, headers=headers)
        await response(scope, receive, send)


def credentials_of(scope: Scope) -> Credentials:
    proxy_cert: str | None = None
    authorization: str | None = None
    seen: dict[bytes, int] = {}
    for name, value in scope.get("headers", ()):
        if name in _CREDENTIAL_HEADERS:
            seen[name] = seen.get(name, 0) + 1
        if name == PROXY_CERT_HEADER and value:  # nginx sends "" when no cert was given
            proxy_cert = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    client = scope.get("client")
    return Credentials(
        peer_cert=peer_certificate(),
        proxy_cert_header=proxy_cert,
        peer_host=client[0] if client else None,
        authorization=authorization,
        repeated=tuple(_CREDENTIAL_HEADERS[n] for n, count in seen.items() if count > 1),
    )


_CREDENTIAL_HEADERS = {PROXY_CERT_HEADER: "X-SSL-Client-Cert", b"authorization": "Authorization"}
