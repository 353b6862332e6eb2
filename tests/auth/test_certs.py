"""Certificate checks without a server: real chain verification and the identity forms the
allowlists compare (the Rust tei-manager compared names only and lost the `DNS:` prefix)."""

from __future__ import annotations

import datetime
import ipaddress
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from tei_reconciler.auth.certs import (
    CertificateError,
    ChainVerifier,
    common_name,
    decode_proxy_header,
    subject_alt_names,
)
from tei_reconciler.auth.principal import Verdict
from tei_reconciler.auth.providers import Authenticator, Credentials, MtlsProvider

from .pki import Pki


def verifier(pki: Pki) -> ChainVerifier:
    return ChainVerifier(pki.ca.cert_pem.bytes())


def cert_of(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def test_a_ca_signed_certificate_verifies_and_yields_cn_and_typed_sans(pki: Pki) -> None:
    sans = [
        x509.DNSName("client.example.com"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.UniformResourceIdentifier("spiffe://cluster/ops"),
        x509.RFC822Name("ops@example.com"),
    ]
    cert = verifier(pki).verify([pki.signed_by_ca("client1", sans)])
    assert common_name(cert) == "client1"
    assert subject_alt_names(cert) == (
        "DNS:client.example.com",
        "IP:10.1.2.3",
        "URI:spiffe://cluster/ops",
        "email:ops@example.com",
    )


def test_a_certificate_with_the_ca_as_issuer_name_but_another_signature_is_rejected(
    pki: Pki,
) -> None:
    with pytest.raises(CertificateError, match="signature"):
        verifier(pki).verify(cert_of(pki.forged_pem("client1")))


def test_an_expired_or_not_yet_valid_certificate_is_rejected(pki: Pki) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.ca.issue_cert(
        common_name="old",
        not_before=now - datetime.timedelta(days=10),
        not_after=now - datetime.timedelta(days=1),
    )
    future = pki.ca.issue_cert(
        common_name="new",
        not_before=now + datetime.timedelta(days=1),
        not_after=now + datetime.timedelta(days=10),
    )
    for leaf in (expired, future):
        with pytest.raises(CertificateError):
            verifier(pki).verify(cert_of(leaf.cert_chain_pems[0].bytes()))


def test_a_leaf_that_is_not_a_ca_cannot_vouch_for_another_certificate(pki: Pki) -> None:
    """A client key signing a "sub-client" certificate must not pass as an intermediate."""
    parent = pki.client("client1")
    parent_cert = cert_of(parent.cert_chain_pems[0].bytes())[0]
    parent_key = load_pem_private_key(parent.private_key_pem.bytes(), None)
    assert isinstance(parent_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    child = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin")]))
        .issuer_name(parent_cert.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(parent_key, hashes.SHA256())
    )
    with pytest.raises(CertificateError):
        verifier(pki).verify([child, parent_cert])


def test_a_chain_through_an_intermediate_ca_verifies(pki: Pki) -> None:
    intermediate = pki.ca.create_child_ca()
    leaf = intermediate.issue_cert(common_name="via-intermediate")
    chain = cert_of(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    assert common_name(verifier(pki).verify(chain)) == "via-intermediate"


def test_an_undecodable_proxy_header_is_an_error_not_an_absence() -> None:
    for value in ("", "garbage", urllib.parse.quote("-----BEGIN CERTIFICATE-----\n!!\n")):
        with pytest.raises(CertificateError):
            decode_proxy_header(value)


def test_nginx_tab_continued_pem_is_understood(pki: Pki) -> None:
    pem = pki.client("client1").cert_chain_pems[0].bytes().decode()
    tabbed = pem.strip().replace("\n", "\n\t")
    assert common_name(decode_proxy_header(tabbed)[0]) == "client1"


def test_subject_allowlists_match_exactly_and_sans_compare_by_kind(pki: Pki) -> None:
    provider = MtlsProvider(
        pki.mtls(allowed_subjects=("client1",), allowed_sans=("IP:::1", "DNS:Api.Example.com")),
        verifier(pki),
    )
    auth = Authenticator([provider])

    def verdict(cn: str, *sans: str) -> Verdict:
        leaf = pki.client(cn, *sans).cert_chain_pems[0].bytes()
        return auth.decide(Credentials(peer_cert=cert_of(leaf)[0])).verdict

    assert verdict("client1") is Verdict.ALLOWED
    assert verdict("client10") is Verdict.DENIED
    assert verdict("xclient1") is Verdict.DENIED
    assert verdict("CN=client1") is Verdict.DENIED
    assert verdict("other", "0:0:0:0:0:0:0:1") is Verdict.ALLOWED
    assert verdict("other", "api.example.com") is Verdict.ALLOWED
    assert verdict("other", "api.example.com.evil") is Verdict.DENIED
    assert auth.decide(Credentials()).verdict is Verdict.ABSENT


def test_only_certificates_meant_for_clients_are_accepted(pki: Pki) -> None:
    """A server certificate from the same CA (extendedKeyUsage serverAuth only) is not a
    client identity; a certificate without the extension, or with clientAuth, is."""
    dns: list[x509.GeneralName] = [x509.DNSName("client.example.com")]
    server_only = pki.signed_by_ca("web", dns, [ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(CertificateError, match="client authentication"):
        verifier(pki).verify([server_only])
    for usages in (None, [ExtendedKeyUsageOID.CLIENT_AUTH]):
        leaf = pki.signed_by_ca("client1", dns, usages)
        assert verifier(pki).verify([leaf]) is leaf
