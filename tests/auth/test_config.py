"""`[auth]` as a user writes it: what the config file accepts, and what the two builders
hand to the servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.auth import build_grpc_auth, build_rest_auth
from tei_reconciler.errors import AuthConfigError, SpecError
from tei_reconciler.settings import AuthSettings, Settings, TokenSettings, load_settings

from .pki import Pki


def load(tmp_path: Path, text: str) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(text)
    return load_settings({}, {}, config)


def test_without_providers_neither_server_gets_auth_or_tls() -> None:
    assert build_rest_auth(Settings()) == ([], None)
    assert build_grpc_auth(Settings()) == ([], None)


def test_a_proxy_deployment_loads_from_the_config_file_and_serves_plain_http(
    pki: Pki, tmp_path: Path
) -> None:
    settings = load(
        tmp_path,
        f"""
[auth]
providers = ["mtls"]
[auth.mtls]
ca_cert = "{pki.dir}/ca.pem"
server_cert = "{pki.dir}/server.pem"
server_key = "{pki.dir}/server-key.pem"
allowed_sans = ["DNS:client.example.com"]
trusted_proxies = ["10.0.0.0/8"]
rest_tls = false
""",
    )
    middleware, context = build_rest_auth(settings)
    interceptors, credentials = build_grpc_auth(settings)
    assert len(middleware) == 1
    assert context is None
    assert len(interceptors) == 1
    assert credentials is not None


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('[auth.mtls]\nrest_tls = false\nca_cert = "c"', "auth.mtls.rest_tls"),
        ('[auth.mtls]\nallowed_sans = ["client.example.com"]', "auth.mtls.allowed_sans"),
        ('[auth.mtls]\ntrusted_proxies = ["not-a-cidr"]', "auth.mtls.trusted_proxies"),
        ('exempt_grpc_services = ["/grpc.health.v1.Health/Check"]', "auth.exempt_grpc_services"),
    ],
)
def test_auth_mistakes_are_reported_with_their_field(
    tmp_path: Path, table: str, field: str
) -> None:
    with pytest.raises(SpecError) as error:
        load(tmp_path, f"[auth]\n{table}\n")
    assert field in {p.field for p in error.value.problems}


def test_a_missing_ca_or_tokens_file_fails_startup(pki: Pki, tmp_path: Path) -> None:
    no_ca = AuthSettings(providers=("mtls",), mtls=pki.mtls(ca_cert=str(tmp_path / "nope.pem")))
    no_tokens = AuthSettings(
        providers=("token",), token=TokenSettings(tokens_file=str(tmp_path / "missing"))
    )
    for auth in (no_ca, no_tokens):
        with pytest.raises(AuthConfigError):
            build_rest_auth(Settings(auth=auth))
