"""Who the caller is, and what the auth layer decided about them.

Providers never raise to refuse a request: each returns a `Decision`, so the multi-provider
rule (`providers.py`) can tell "no credentials of my kind" from "credentials that are wrong"
from "a known caller who is not allowed". Those map to 401, 401 and 403 (gRPC:
UNAUTHENTICATED, UNAUTHENTICATED, PERMISSION_DENIED).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An authenticated caller. Tokens are identified by a digest, never by their value."""

    method: Literal["mtls", "token"]
    subject: str | None = None  # certificate subject CN
    sans: tuple[str, ...] = ()  # "DNS:x", "IP:1.2.3.4", "URI:spiffe://...", "email:a@b"
    token_id: str | None = None  # "token:<first 12 hex of sha256>"
    via_proxy: bool = False  # the certificate came in X-SSL-Client-Cert from a trusted proxy

    @property
    def name(self) -> str:
        if self.method == "token":
            return self.token_id or "token"
        return self.subject or (self.sans[0] if self.sans else "<no subject>")


class Verdict(enum.Enum):
    ABSENT = "absent"  # the request carries no credentials of this provider's kind
    INVALID = "invalid"  # credentials were presented and failed verification
    DENIED = "denied"  # credentials are valid, but the caller is not on the allowlist
    ALLOWED = "allowed"  # valid and allowed; `principal` is set


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    principal: Principal | None = None

    @classmethod
    def allowed(cls, principal: Principal) -> Decision:
        return cls(Verdict.ALLOWED, "", principal)


ABSENT = Decision(Verdict.ABSENT, "no credentials")
