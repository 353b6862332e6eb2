"""Authentication for the REST API and the gRPC router: mTLS (native or via a trusted
proxy) and bearer tokens, one set of providers behind both transports."""

from __future__ import annotations

from tei_reconciler.auth.build import build_grpc_auth, build_rest_auth
from tei_reconciler.auth.principal import Decision, Principal, Verdict
from tei_reconciler.auth.providers import Authenticator, Credentials

__all__ = [
    "Authenticator",
    "Credentials",
    "Decision",
    "Principal",
    "Verdict",
    "build_grpc_auth",
    "build_rest_auth",
]
