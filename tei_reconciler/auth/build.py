"""Turn `[auth]` into what the two servers take: two calls for the composition root.

    middleware, ssl_context = build_rest_auth(settings)      # create_app / serve_api
    interceptors, credentials = build_grpc_auth(settings)    # serve_router

No providers: no middleware, no TLS (the default; both ports listen on 127.0.0.1).
With "mtls", REST serves TLS and verifies client certificates against the CA. The handshake
requires one only when nothing else could pass: with "token" configured too, or with exempt
paths (the kubelet's probes present no certificate), a client without one finishes the
handshake and the middleware requires a certificate or a token on every other path;
`rest_tls = false` makes REST plain HTTP for a TLS-terminating proxy in `trusted_proxies`.
gRPC with "mtls" always requires a CA-signed client certificate at the handshake. Files are
loaded here, so a missing or broken CA, key or tokens file fails startup (`AuthConfigError`).
"""

from __future__ import annotations

import ssl

import grpc
from starlette.middleware import Middleware

from tei_reconciler.auth.grpc import AuthInterceptor
from tei_reconciler.auth.providers import Authenticator
from tei_reconciler.auth.rest import AuthMiddleware
from tei_reconciler.auth.tls import grpc_server_credentials, server_ssl_context
from tei_reconciler.settings import Settings


def build_rest_auth(settings: Settings) -> tuple[list[Middleware], ssl.SSLContext | None]:
    auth = settings.auth
    if not auth.providers:
        return [], None
    authenticator = Authenticator.from_settings(auth)
    middleware = [
        Middleware(AuthMiddleware, authenticator=authenticator, exempt_paths=auth.exempt_paths)
    ]
    if "mtls" not in auth.providers or not auth.mtls.rest_tls:
        return middleware, None
    bare_allowed = "token" in auth.providers or bool(auth.exempt_paths)
    context = server_ssl_context(auth.mtls, require_client_cert=not bare_allowed)
    return middleware, context


def build_grpc_auth(
    settings: Settings,
) -> tuple[list[grpc.aio.ServerInterceptor], grpc.ServerCredentials | None]:
    auth = settings.auth
    if not auth.providers:
        return [], None
    interceptor = AuthInterceptor(
        Authenticator.from_settings(auth), exempt_services=auth.exempt_grpc_services
    )
    credentials = grpc_server_credentials(auth.mtls) if "mtls" in auth.providers else None
    return [interceptor], credentials
