"""Server-side TLS for both ports, and how the REST middleware learns the peer certificate.

Hypercorn does not put the TLS connection in the ASGI scope, so the middleware could not see
who connected (the Rust tei-manager had the same gap and never enforced its allowlists on
native TLS). `server_ssl_context` therefore builds an `SSLContext` whose `SSLObject` records
the verified peer certificate in a context variable when the handshake completes. asyncio
runs the handshake and `connection_made` for a connection in that connection's own context,
and every task serving the connection copies it, so `peer_certificate()` called by the ASGI
app returns the certificate of the connection it serves. Where nothing was recorded (another
server, plain HTTP) it returns None, and the mTLS provider refuses: the failure mode is closed.
"""

from __future__ import annotations

import contextvars
import ssl
from pathlib import Path

import grpc
from cryptography import x509

from tei_reconciler.errors import AuthConfigError
from tei_reconciler.settings import MtlsSettings

_PEER_CERT: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "tei_reconciler_peer_cert", default=None
)


class _RecordingSSLObject(ssl.SSLObject):
    """Records the peer certificate (DER) once the handshake, and its verification, is done."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _PEER_CERT.set(self.getpeercert(binary_form=True))


def peer_certificate() -> x509.Certificate | None:
    """The client certificate of the TLS connection serving the current request, verified
    against the CA by the handshake; None without TLS or without a client certificate."""
    der = _PEER_CERT.get()
    if not der:
        return None
    return x509.load_der_x509_certificate(der)


def _paths(mtls: MtlsSettings) -> tuple[str, str, str]:
    if mtls.ca_cert is None or mtls.server_cert is None or mtls.server_key is None:
        raise AuthConfigError("auth.mtls needs ca_cert, server_cert and server_key")
    return mtls.ca_cert, mtls.server_cert, mtls.server_key


def server_ssl_context(mtls: MtlsSettings, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """A TLS 1.2+ server context for hypercorn that verifies client certificates against the
    CA. `require_client_cert=False` still verifies a certificate when one is sent, but lets
    clients without one finish the handshake (for token auth beside mTLS)."""
    ca, cert, key = _paths(mtls)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise AuthConfigError(f"auth.mtls: cannot load TLS files: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["h2", "http/1.1"])
    context.sslobject_class = _RecordingSSLObject
    return context


def grpc_server_credentials(mtls: MtlsSettings) -> grpc.ServerCredentials:
    """gRPC TLS that requires a client certificate signed by the CA at the handshake.

    grpc's Python API has no "verify if presented" mode: without `require_client_auth` it
    does not ask for a certificate at all, so mTLS on gRPC always makes one mandatory."""
    ca, cert, key = _paths(mtls)
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
        root = Path(ca).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"auth.mtls: cannot load TLS files: {exc}") from exc
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=True)
