"""Envoy itself accepts every configuration the reconciler generates: the bootstrap with a
snapshot's resources inlined (`bootstrap.inline`), checked by `envoy --mode validate`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec
import pytest
import trustme

from tei_reconciler._types import Secret
from tei_reconciler.dataplane.bootstrap import (
    MUX_METHODS,
    MUX_STREAMS,
    Spec,
    Tls,
    bootstrap,
    inline,
    to_json,
)
from tei_reconciler.dataplane.translate import AuthContext, Plan, translate
from tei_reconciler.planner.phase import Phase
from tei_reconciler.routing import Endpoint


def ep(
    name: str, model: str, port: int, *, ready: bool = True, host: str = "127.0.0.1"
) -> Endpoint:
    return Endpoint(
        name=name, model_id=model, host=host, port=port, ready=ready, phase=Phase.RUNNING
    )


TABLE = [
    ep("bge", "BAAI/bge-large-en-v1.5", 8080),
    ep("bge-2", "BAAI/bge-large-en-v1.5", 8081, ready=False),
    ep("minilm", "sentence-transformers/all-MiniLM-L6-v2", 8082),
    ep("v6", "hash/384", 8083, host="::1"),
    msgspec.structs.replace(ep("keyed", "hash/8", 8084), api_key=Secret("instance-key")),
]
AUTH = AuthContext(
    mtls=True,
    token=True,
    allowed_subjects=("ops-client",),
    allowed_sans=("DNS:client.example.com", "IP:10.0.0.7", "URI:spiffe://prod/ops"),
    token_digests=("0" * 64,),
    exempt_services=("grpc.health.v1.Health",),
)


def validate(envoy: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("endpoints", "plan", "auth", "listen_host"),
    [
        pytest.param([], Plan(request_timeout_secs=30), None, "127.0.0.1", id="empty table"),
        pytest.param(
            TABLE,
            Plan(
                request_timeout_secs=30,
                default_instance="bge",
                multiplexer=MUX_METHODS,
                streams=MUX_STREAMS,
            ),
            None,
            "0.0.0.0",
            id="instances, models, a default, IPv6, an API key",
        ),
        pytest.param(
            TABLE,
            Plan(
                request_timeout_secs=86400, auth=AUTH, multiplexer=MUX_METHODS, streams=MUX_STREAMS
            ),
            "mtls",
            "::1",
            id="mTLS and tokens",
        ),
        pytest.param(
            TABLE[:1],
            Plan(request_timeout_secs=0.5, auth=msgspec.structs.replace(AUTH, mtls=False)),
            "token",
            "127.0.0.1",
            id="tokens only, plaintext",
        ),
    ],
)
def test_envoy_accepts_the_generated_configuration(
    envoy: str,
    tmp_path: Path,
    endpoints: list[Endpoint],
    plan: Plan,
    auth: str | None,
    listen_host: str,
) -> None:
    tls = None
    if auth == "mtls":
        ca = trustme.CA()
        server = ca.issue_cert("localhost")
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
        server.private_key_pem.write_to_path(str(tmp_path / "server-key.pem"))
        tls = Tls(
            ca_cert=str(tmp_path / "ca.pem"),
            server_cert=str(tmp_path / "server.pem"),
            server_key=str(tmp_path / "server-key.pem"),
        )
    spec = Spec(
        admin_socket=str(tmp_path / "admin.sock"),
        xds_socket=str(tmp_path / "xds.sock"),
        router_socket=str(tmp_path / "router.sock"),
        listen_host=listen_host,
        listen_port=0,
        tls=tls,
        auth=auth is not None,
    )
    dynamic = tmp_path / "bootstrap.json"
    dynamic.write_text(to_json(bootstrap(spec)))
    static = tmp_path / "static.json"
    static.write_text(to_json(inline(bootstrap(spec), translate(endpoints, plan))))
    for path in (dynamic, static):
        result = validate(envoy, path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"configuration '{path}' OK" in result.stdout + result.stderr


def test_a_broken_configuration_is_refused_by_envoy_validate(envoy: str, tmp_path: Path) -> None:
    """The check above can fail: a route naming a regex RE2 cannot compile is refused."""
    spec = Spec(
        admin_socket=str(tmp_path / "admin.sock"),
        xds_socket=str(tmp_path / "xds.sock"),
        router_socket=str(tmp_path / "router.sock"),
        listen_host="127.0.0.1",
        listen_port=0,
    )
    resources = translate(TABLE[:1], Plan(request_timeout_secs=30))
    resources.routes[0].virtual_hosts[0].routes[1].match.headers[
        0
    ].string_match.safe_regex.regex = "("
    path = tmp_path / "static.json"
    path.write_text(to_json(inline(bootstrap(spec), resources)))
    result = validate(envoy, path)
    assert result.returncode != 0
