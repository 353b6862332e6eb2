"""Certificates for the auth tests: a trustme CA, a server and clients, plus the forgeries
the Rust tei-manager accepted (right issuer name, wrong signature)."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tei_reconciler.settings import MtlsSettings


@dataclass
class Pki:
    ca: trustme.CA
    other_ca: trustme.CA
    dir: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        pki = cls(trustme.CA(), trustme.CA(), directory)
        pki.ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        server = pki.ca.issue_cert("localhost", "127.0.0.1")
        server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        server.private_key_pem.write_to_path(str(directory / "server-key.pem"))
        return pki

    def mtls(self, **options: object) -> MtlsSettings:
        files = {
            "ca_cert": str(self.dir / "ca.pem"),
            "server_cert": str(self.dir / "server.pem"),
            "server_key": str(self.dir / "server-key.pem"),
        }
        return MtlsSettings(**(files | options))  # type: ignore[arg-type]

    def client(self, cn: str | None, *sans: str, ca: trustme.CA | None = None) -> trustme.LeafCert:
        return (ca or self.ca).issue_cert(*sans, common_name=cn)

    def client_ssl(self, leaf: trustme.LeafCert | None) -> ssl.SSLContext:
        """A client context trusting our CA and presenting `leaf` (None: no certificate)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if leaf is not None:
            leaf.configure_cert(context)
        return context

    def forged_pem(self, cn: str) -> bytes:
        """A certificate naming our CA as issuer, signed by an unrelated key."""
        issuer = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes()).subject
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def signed_by_ca(
        self,
        cn: str,
        sans: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier] | None = None,
    ) -> x509.Certificate:
        """A client certificate with SAN kinds trustme does not issue (URI, email), and the
        extended key usages `usages` (None: no such extension, which allows any use)."""
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        issuer = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes()).subject
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        )
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return builder.sign(ca_key, hashes.SHA256())
