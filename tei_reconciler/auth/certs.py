"""X.509 for client authentication: parse, verify against the CA for real, extract identity.

The Rust tei-manager "verified" proxy-supplied certificates by comparing the issuer name with
the CA's subject, so anyone could mint one. Here a certificate counts only after OpenSSL has
built a chain to the configured CA: every signature checked, every certificate inside its
validity period, every issuer a CA (basicConstraints CA:TRUE, checked again explicitly).

Identities use one text form everywhere (allowlists, principals, logs): the subject CN as is,
SANs as `DNS:name`, `IP:address`, `URI:uri`, `email:address`.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


class CertificateError(ValueError):
    """A certificate is undecodable, or does not verify against the CA."""


def load_pem_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; at least one, or `CertificateError`."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None
    if not certs:
        raise CertificateError("no certificate in the PEM data")
    return certs


def decode_proxy_header(value: str) -> list[x509.Certificate]:
    """The chain in an `X-SSL-Client-Cert` header: URL-encoded PEM (nginx
    `$ssl_client_escaped_cert`), or PEM with tab-continued lines (nginx `$ssl_client_cert`)."""
    text = urllib.parse.unquote(value).replace("\t", "")
    if _PEM_BEGIN not in text:
        raise CertificateError("X-SSL-Client-Cert is not a PEM certificate")
    return load_pem_certs(text.encode("ascii", errors="replace"))


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def subject_alt_names(cert: x509.Certificate) -> tuple[str, ...]:
    """SANs in `DNS:`/`IP:`/`URI:`/`email:` form, in certificate order."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    sans: list[str] = []
    for name in ext:
        match name:
            case x509.DNSName():
                sans.append(f"DNS:{name.value}")
            case x509.IPAddress():
                sans.append(f"IP:{name.value}")
            case x509.UniformResourceIdentifier():
                sans.append(f"URI:{name.value}")
            case x509.RFC822Name():
                sans.append(f"email:{name.value}")
    return tuple(sans)


def normalize_san(san: str) -> str:
    """The comparable form of a SAN: DNS names and emails are case-insensitive, IPs are
    compared as addresses (so `IP:::1` equals `IP:0:0:0:0:0:0:0:1`)."""
    kind, _, value = san.partition(":")
    if kind == "DNS":
        return f"DNS:{value.lower().rstrip('.')}"
    if kind == "email":
        return f"email:{value.lower()}"
    if kind == "IP":
        try:
            return f"IP:{ipaddress.ip_address(value)}"
        except ValueError:
            return san
    return san


class ChainVerifier:
    """Verifies client certificates against the CA bundle, as the TLS handshake would."""

    def __init__(self, ca_pem: bytes) -> None:
        self._store = crypto.X509Store()
        for ca in load_pem_certs(ca_pem):
            self._store.add_cert(crypto.X509.from_cryptography(ca))

    def verify(self, chain: list[x509.Certificate]) -> x509.Certificate:
        """Verify `chain[0]` (the leaf) with `chain[1:]` as untrusted intermediates; return
        the leaf, or raise `CertificateError` saying why not."""
        if not chain:
            raise CertificateError("no certificate")
        leaf, *intermediates = chain
        context = crypto.X509StoreContext(
            self._store,
            crypto.X509.from_cryptography(leaf),
            [crypto.X509.from_cryptography(c) for c in intermediates],
        )
        try:
            verified = context.get_verified_chain()
        except crypto.X509StoreContextError as exc:
            raise CertificateError(f"certificate verification failed: {exc}") from None
        for issuer in verified[1:]:
            if not _is_ca(issuer.to_cryptography()):
                raise CertificateError("an issuer in the chain is not a CA (CA:TRUE missing)")
        if not _for_clients(leaf):
            raise CertificateError(
                "the certificate is not for client authentication (extendedKeyUsage lacks "
                "clientAuth)"
            )
        return leaf


def _for_clients(cert: x509.Certificate) -> bool:
    """RFC 5280: without an extendedKeyUsage extension any use is allowed; with one, it must
    name clientAuth (or anyExtendedKeyUsage)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    oid = ExtendedKeyUsageOID
    return any(usage in (oid.CLIENT_AUTH, oid.ANY_EXTENDED_KEY_USAGE) for usage in usages)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
