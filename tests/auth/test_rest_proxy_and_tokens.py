"""REST over plain HTTP: client certificates forwarded by a trusted TLS-terminating proxy in
`X-SSL-Client-Cert`, and bearer tokens. Every refusal is the JSON error envelope."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import httpx
import pytest

from tei_reconciler.settings import AuthSettings, TokenSettings
from tei_reconciler.store import StatusStore

from .pki import Pki
from .servers import rest_server, settings_with

pytestmark = pytest.mark.anyio


def behind_proxy(pki: Pki, trusted: str, **allow: object) -> AuthSettings:
    mtls = pki.mtls(rest_tls=False, trusted_proxies=(trusted,), **allow)
    return AuthSettings(providers=("mtls",), mtls=mtls)


def header(pem: bytes) -> dict[str, str]:
    """As nginx sends `$ssl_client_escaped_cert`."""
    return {"X-SSL-Client-Cert": urllib.parse.quote(pem.decode())}


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url + "/instances", headers=headers)


def assert_envelope(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["timestamp"], str)


async def test_a_trusted_proxy_forwarding_an_allowed_certificate_is_let_through(
    pki: Pki, tmp_path: Path
) -> None:
    auth = behind_proxy(pki, "127.0.0.1/32", allowed_subjects=("client1",))
    async with rest_server(settings_with(tmp_path, auth)) as url:
        allowed = await get(url, header(pki.client("client1").cert_chain_pems[0].bytes()))
        other = await get(url, header(pki.client("client10").cert_chain_pems[0].bytes()))
        nothing = await get(url)
    assert url.startswith("http://")
    assert allowed.status_code == 200
    assert_envelope(other, 403, "FORBIDDEN")
    assert_envelope(nothing, 401, "UNAUTHORIZED")


async def test_the_certificate_header_from_a_peer_that_is_not_a_trusted_proxy_is_refused(
    pki: Pki, tmp_path: Path
) -> None:
    auth = behind_proxy(pki, "10.0.0.0/8", allowed_subjects=("client1",))
    async with rest_server(settings_with(tmp_path, auth)) as url:
        response = await get(url, header(pki.client("client1").cert_chain_pems[0].bytes()))
    assert_envelope(response, 401, "UNAUTHORIZED")
    assert "trusted proxies" in response.json()["error"]


async def test_a_forged_certificate_naming_the_ca_as_issuer_is_refused(
    pki: Pki, tmp_path: Path
) -> None:
    async with rest_server(settings_with(tmp_path, behind_proxy(pki, "127.0.0.0/8"))) as url:
        forged = await get(url, header(pki.forged_pem("client1")))
        foreign = await get(
            url, header(pki.client("client1", ca=pki.other_ca).cert_chain_pems[0].bytes())
        )
    assert_envelope(forged, 401, "UNAUTHORIZED")
    assert "signature" in forged.json()["error"]
    assert_envelope(foreign, 401, "UNAUTHORIZED")


async def test_several_certificate_headers_in_one_request_are_refused_not_last_one_wins(
    pki: Pki, tmp_path: Path
) -> None:
    allowed = header(pki.client("client1").cert_chain_pems[0].bytes())["X-SSL-Client-Cert"]
    other = header(pki.client("client10").cert_chain_pems[0].bytes())["X-SSL-Client-Cert"]
    auth = behind_proxy(pki, "127.0.0.1/32", allowed_subjects=("client1",))
    async with (
        rest_server(settings_with(tmp_path, auth)) as url,
        httpx.AsyncClient(timeout=30) as client,
    ):
        responses = [
            await client.get(
                url + "/instances", headers=[("X-SSL-Client-Cert", a), ("X-SSL-Client-Cert", b)]
            )
            for a, b in [(other, allowed), (allowed, allowed), (allowed, "")]
        ]
        single = await client.get(url + "/instances", headers={"X-SSL-Client-Cert": allowed})
    for response in responses:
        assert_envelope(response, 401, "UNAUTHORIZED")
        assert response.json()["error"] == "X-SSL-Client-Cert may appear only once in a request"
    assert single.status_code == 200


async def test_several_authorization_headers_are_refused_even_if_one_is_right(
    tmp_path: Path,
) -> None:
    auth = AuthSettings(providers=("token",), token=TokenSettings(tokens=("right",)))
    async with (
        rest_server(settings_with(tmp_path, auth)) as url,
        httpx.AsyncClient(timeout=30) as client,
    ):
        twice = await client.get(
            url + "/instances",
            headers=[("Authorization", "Bearer wrong"), ("Authorization", "Bearer right")],
        )
        once = await client.get(url + "/instances", headers={"Authorization": "Bearer right"})
    assert_envelope(twice, 401, "UNAUTHORIZED")
    assert "Authorization may appear only once" in twice.json()["error"]
    assert once.status_code == 200


async def test_an_undecodable_certificate_header_is_refused_never_ignored(
    pki: Pki, tmp_path: Path
) -> None:
    garbage = [
        {"X-SSL-Client-Cert": "not-a-certificate"},
        {"X-SSL-Client-Cert": urllib.parse.quote("-----BEGIN CERTIFICATE-----\nAAAA\n")},
    ]
    async with rest_server(settings_with(tmp_path, behind_proxy(pki, "127.0.0.1/32"))) as url:
        responses = [await get(url, h) for h in garbage]
    for response in responses:
        assert_envelope(response, 401, "UNAUTHORIZED")


async def test_bearer_tokens_right_wrong_and_missing(tmp_path: Path) -> None:
    auth = AuthSettings(providers=("token",), token=TokenSettings(tokens=("alpha", "beta")))
    async with rest_server(settings_with(tmp_path, auth)) as url:
        right = await get(url, {"Authorization": "Bearer beta"})
        wrong = await get(url, {"Authorization": "Bearer gamma"})
        basic = await get(url, {"Authorization": "Basic YmV0YTo="})
        missing = await get(url)
        health = await get_path(url, "/health")
    assert right.status_code == 200
    for refused in (wrong, basic, missing):
        assert_envelope(refused, 401, "UNAUTHORIZED")
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="tei-reconciler"'
    assert health.status_code == 200


async def test_with_tokens_on_the_probes_reach_health_and_ready_without_one(
    tmp_path: Path,
) -> None:
    store = StatusStore()
    store.first_pass_done, store.observed_revision = True, "r1"
    store.spec_errors = ("state.toml:1:1: syntax: invalid TOML",)
    auth = AuthSettings(providers=("token",), token=TokenSettings(tokens=("s3cret",)))
    async with rest_server(settings_with(tmp_path, auth), store) as url:
        health = await get_path(url, "/health")
        ready = await get_path(url, "/ready")
        plan = await get_path(url, "/plan")
    assert (health.status_code, health.json()["status"]) == (200, "healthy")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert ready.json()["spec_valid"] is False
    assert_envelope(plan, 401, "UNAUTHORIZED")


async def get_path(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url + path)


async def test_tokens_rotate_when_the_tokens_file_changes(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# ops team\nold-token\n")
    auth = AuthSettings(providers=("token",), token=TokenSettings(tokens_file=str(tokens)))
    async with rest_server(settings_with(tmp_path, auth)) as url:
        before = await get(url, {"Authorization": "Bearer old-token"})
        tokens.write_text("# ops team\nnew-token\n")
        stat = tokens.stat()
        os.utime(tokens, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        old = await get(url, {"Authorization": "Bearer old-token"})
        new = await get(url, {"Authorization": "Bearer new-token"})
        comment = await get(url, {"Authorization": "Bearer # ops team"})
    assert before.status_code == 200
    assert old.status_code == 401
    assert new.status_code == 200
    assert comment.status_code == 401


async def test_deleting_the_tokens_file_revokes_its_tokens_until_it_is_back(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("from-file\n")
    auth = AuthSettings(
        providers=("token",),
        token=TokenSettings(tokens=("from-config",), tokens_file=str(tokens)),
    )
    bearer = {"Authorization": "Bearer from-file"}
    async with rest_server(settings_with(tmp_path, auth)) as url:
        before = await get(url, bearer)
        tokens.unlink()
        deleted = await get(url, bearer)
        config = await get(url, {"Authorization": "Bearer from-config"})
        tokens.write_text("from-file\n")
        back = await get(url, bearer)
    assert before.status_code == 200
    assert_envelope(deleted, 401, "UNAUTHORIZED")
    assert config.status_code == 200
    assert back.status_code == 200


async def test_exempt_paths_are_configurable(tmp_path: Path) -> None:
    auth = AuthSettings(
        providers=("token",), token=TokenSettings(tokens=("t",)), exempt_paths=("/metrics",)
    )
    async with rest_server(settings_with(tmp_path, auth)) as url:
        health = await get_path(url, "/health")
        metrics = await get_path(url, "/metrics")
    assert_envelope(health, 401, "UNAUTHORIZED")
    assert metrics.status_code == 200
