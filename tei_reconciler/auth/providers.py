"""The providers and the rule that combines them.

A request passes when any configured provider allows it. Otherwise it is refused with 403
when some provider recognised a valid caller who is not on its allowlist, and with 401 when
the credentials are missing or wrong. Both transports (REST middleware, gRPC interceptor)
collect the same `Credentials` and ask one `Authenticator`, so their behaviour cannot drift.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509

from tei_reconciler.auth.certs import (
    CertificateError,
    ChainVerifier,
    common_name,
    decode_proxy_header,
    normalize_san,
    subject_alt_names,
)
from tei_reconciler.auth.principal import ABSENT, Decision, Principal, Verdict
from tei_reconciler.errors import AuthConfigError
from tei_reconciler.settings import AuthSettings, MtlsSettings, TokenSettings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What one request or call presents, before any judgement."""

    peer_cert: x509.Certificate | None = None  # already verified by our TLS handshake
    proxy_cert_header: str | None = None  # raw X-SSL-Client-Cert
    peer_host: str | None = None  # TCP peer address (the proxy, behind one)
    authorization: str | None = None  # raw Authorization header / metadata
    # Credential headers sent more than once: which one would count is a proxy's or a
    # parser's accident ("last one wins" lets a client's own header ride along), so refuse.
    repeated: tuple[str, ...] = ()


class Provider(Protocol):
    def check(self, credentials: Credentials) -> Decision: ...


class MtlsProvider:
    """Client certificates: from our own TLS handshake, or from a trusted proxy's header.

    Allowlists match exactly: `allowed_subjects` against the CN, `allowed_sans` against the
    SANs in `DNS:`/`IP:`/`URI:`/`email:` form. With both empty, any CA-signed client passes.
    """

    def __init__(self, settings: MtlsSettings, verifier: ChainVerifier) -> None:
        self._verifier = verifier
        self._subjects = frozenset(settings.allowed_subjects)
        self._sans = frozenset(normalize_san(s) for s in settings.allowed_sans)
        self._proxies: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies
        )

    @classmethod
    def from_settings(cls, settings: MtlsSettings) -> MtlsProvider:
        if settings.ca_cert is None:
            raise AuthConfigError("auth.mtls.ca_cert is required for the mtls provider")
        try:
            verifier = ChainVerifier(Path(settings.ca_cert).read_bytes())
        except (OSError, CertificateError) as exc:
            raise AuthConfigError(f"auth.mtls.ca_cert {settings.ca_cert}: {exc}") from exc
        return cls(settings, verifier)

    def check(self, credentials: Credentials) -> Decision:
        if credentials.proxy_cert_header is not None:
            return self._check_header(credentials.proxy_cert_header, credentials.peer_host)
        if credentials.peer_cert is not None:
            return self._judge(credentials.peer_cert, via_proxy=False)
        return ABSENT

    def trusts_proxy(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._proxies)

    def _check_header(self, header: str, peer_host: str | None) -> Decision:
        if not self.trusts_proxy(peer_host):
            return Decision(
                Verdict.INVALID, "X-SSL-Client-Cert is accepted only from trusted proxies"
            )
        try:
            leaf = self._verifier.verify(decode_proxy_header(header))
        except CertificateError as exc:
            return Decision(Verdict.INVALID, f"invalid client certificate: {exc}")
        return self._judge(leaf, via_proxy=True)

    def _judge(self, cert: x509.Certificate, *, via_proxy: bool) -> Decision:
        principal = Principal(
            method="mtls",
            subject=common_name(cert),
            sans=subject_alt_names(cert),
            via_proxy=via_proxy,
        )
        if self.allows(principal):
            return Decision.allowed(principal)
        return Decision(
            Verdict.DENIED, f"client certificate {principal.name!r} is not allowed", principal
        )

    def allows(self, principal: Principal) -> bool:
        if not self._subjects and not self._sans:
            return True
        if principal.subject is not None and principal.subject in self._subjects:
            return True
        return any(normalize_san(san) in self._sans for san in principal.sans)


def token_id(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


class TokenProvider:
    """Bearer tokens from the settings and from a tokens file (one per line, `#` comments).

    The file is re-read when its modification time changes, so tokens rotate without a
    restart. A file that disappears, or can no longer be read, revokes every token it held
    (an operator deleting it means "nobody with those tokens"; a rotation by rename or a
    Kubernetes Secret update never makes it disappear); the `tokens` of the settings stay.
    Comparison is constant-time over SHA-256 digests and looks at every token.
    """

    def __init__(self, tokens: Sequence[str], tokens_file: str | None = None) -> None:
        self._static = tuple(tokens)
        self._file = Path(tokens_file) if tokens_file else None
        self._stamp: tuple[int, int] | None = None
        self._digests: tuple[bytes, ...] = ()
        self._reload()

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> TokenProvider:
        return cls(settings.tokens, settings.tokens_file)

    def check(self, credentials: Credentials) -> Decision:
        if credentials.authorization is None:
            return ABSENT
        scheme, _, token = credentials.authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Decision(Verdict.INVALID, "Authorization must be 'Bearer <token>'")
        self._refresh()
        offered = hashlib.sha256(token.encode()).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(offered, digest)
        if not matched:
            return Decision(Verdict.INVALID, "invalid bearer token")
        return Decision.allowed(Principal(method="token", token_id=token_id(token)))

    def digests(self) -> tuple[str, ...]:
        """The hex SHA-256 of every accepted token (the tokens file re-read if it changed),
        for a data plane that checks tokens itself without ever holding one."""
        self._refresh()
        return tuple(d.hex() for d in self._digests)

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
        except OSError as exc:
            self._revoke_file_tokens(exc)
            return
        if (st.st_mtime_ns, st.st_size) != self._stamp:
            try:
                self._reload()
            except AuthConfigError as exc:
                self._revoke_file_tokens(exc)

    def _revoke_file_tokens(self, why: Exception) -> None:
        if self._stamp is None:
            return  # already revoked
        log.warning("auth.token.tokens_file: %s; its tokens are revoked until it is back", why)
        self._stamp = None
        self._digests = tuple(hashlib.sha256(t.encode()).digest() for t in self._static)

    def _reload(self) -> None:
        tokens = list(self._static)
        if self._file is not None:
            try:
                st = os.stat(self._file)
                text = self._file.read_text()
            except OSError as exc:
                raise AuthConfigError(f"auth.token.tokens_file {self._file}: {exc}") from exc
            self._stamp = (st.st_mtime_ns, st.st_size)
            stripped = (line.strip() for line in text.splitlines())
            tokens.extend(t for t in stripped if t and not t.startswith("#"))
        self._digests = tuple(hashlib.sha256(t.encode()).digest() for t in tokens)


class Authenticator:
    """Any provider allowing is enough; otherwise 403 beats 401 (see the module docstring)."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = tuple(providers)

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Authenticator:
        providers: list[Provider] = []
        for name in settings.providers:
            if name == "mtls":
                providers.append(MtlsProvider.from_settings(settings.mtls))
            else:
                providers.append(TokenProvider.from_settings(settings.token))
        return cls(providers)

    def decide(self, credentials: Credentials) -> Decision:
        if credentials.repeated:
            names = " and ".join(credentials.repeated)
            return Decision(Verdict.INVALID, f"{names} may appear only once in a request")
        decisions = [p.check(credentials) for p in self.providers]
        for verdict in (Verdict.ALLOWED, Verdict.DENIED, Verdict.INVALID):
            for decision in decisions:
                if decision.verdict is verdict:
                    return decision
        return Decision(Verdict.ABSENT, "authentication required")
