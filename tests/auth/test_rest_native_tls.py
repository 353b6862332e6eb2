"""REST over hypercorn with native mTLS: the handshake verifies the client certificate
against the CA, and the middleware enforces the CN/SAN allowlists on it, exactly."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest

from tei_reconciler.settings import AuthSettings, TokenSettings
from tei_reconciler.store import StatusStore

from .pki import Pki
from .servers import rest_server, settings_with

pytestmark = pytest.mark.anyio


def mtls_only(pki: Pki, tmp_path: Path, **allow: object) -> AuthSettings:
    return AuthSettings(providers=("mtls",), mtls=pki.mtls(**allow))


async def get(pki: Pki, url: str, cert: object, path: str = "/instances") -> httpx.Response:
    async with httpx.AsyncClient(verify=pki.client_ssl(cert), timeout=30) as client:  # type: ignore[arg-type]
        return await client.get(url + path)


async def test_an_allowed_client_cn_gets_the_api_and_another_cn_gets_403(
    pki: Pki, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, mtls_only(pki, tmp_path, allowed_subjects=("client1",)))
    async with rest_server(settings) as url:
        allowed = await get(pki, url, pki.client("client1"))
        other = await get(pki, url, pki.client("client10"))
        prefix = await get(pki, url, pki.client("client"))
    assert url.startswith("https://")
    assert allowed.status_code == 200
    assert allowed.json() == []
    for refused in (other, prefix):
        assert refused.status_code == 403
        body = refused.json()
        assert body["code"] == "FORBIDDEN"
        assert set(body) >= {"error", "code", "timestamp"}
    assert "client10" in other.json()["error"]


async def test_a_san_on_the_allowlist_admits_a_client_whatever_its_cn(
    pki: Pki, tmp_path: Path
) -> None:
    auth = mtls_only(pki, tmp_path, allowed_sans=("DNS:Client.Example.com", "IP:10.0.0.7"))
    async with rest_server(settings_with(tmp_path, auth)) as url:
        by_dns = await get(pki, url, pki.client("anyone", "client.example.com"))
        by_ip = await get(pki, url, pki.client(None, "10.0.0.7"))
        other_dns = await get(pki, url, pki.client("x", "client.example.com.evil.org"))
    assert by_dns.status_code == 200
    assert by_ip.status_code == 200
    assert other_dns.status_code == 403


async def test_with_nothing_exempt_a_client_without_a_certificate_fails_the_handshake(
    pki: Pki, tmp_path: Path
) -> None:
    auth = msgspec.structs.replace(mtls_only(pki, tmp_path), exempt_paths=())
    async with rest_server(settings_with(tmp_path, auth)) as url:
        with pytest.raises(httpx.TransportError):
            await get(pki, url, None)
        with pytest.raises(httpx.TransportError):
            await get(pki, url, None, path="/health")


async def test_probes_without_a_certificate_reach_health_and_ready_and_nothing_else(
    pki: Pki, tmp_path: Path
) -> None:
    store = StatusStore()
    store.first_pass_done, store.observed_revision = True, "r1"
    auth = mtls_only(pki, tmp_path, allowed_subjects=("ops",))
    async with rest_server(settings_with(tmp_path, auth), store) as url:
        health = await get(pki, url, None, path="/health")
        ready = await get(pki, url, None, path="/ready")
        instances = await get(pki, url, None)
        state = await get(pki, url, None, path="/state")
        denied = await get(pki, url, pki.client("intruder"), path="/ready")
    assert (health.status_code, health.json()["status"]) == (200, "healthy")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert denied.status_code == 200
    for refused in (instances, state):
        assert refused.status_code == 401
        assert refused.json()["code"] == "UNAUTHORIZED"


async def test_a_client_certificate_from_another_ca_is_refused_at_the_handshake(
    pki: Pki, tmp_path: Path
) -> None:
    async with rest_server(settings_with(tmp_path, mtls_only(pki, tmp_path))) as url:
        with pytest.raises(httpx.TransportError):
            await get(pki, url, pki.client("client1", ca=pki.other_ca))


async def test_health_is_exempt_from_the_allowlist_but_instances_are_not(
    pki: Pki, tmp_path: Path
) -> None:
    auth = mtls_only(pki, tmp_path, allowed_subjects=("ops",))
    async with rest_server(settings_with(tmp_path, auth)) as url:
        health = await get(pki, url, pki.client("intruder"), path="/health")
        instances = await get(pki, url, pki.client("intruder"))
    assert health.status_code == 200
    assert instances.status_code == 403


async def test_with_tokens_beside_mtls_a_client_without_a_certificate_needs_a_token(
    pki: Pki, tmp_path: Path
) -> None:
    auth = AuthSettings(
        providers=("mtls", "token"),
        mtls=pki.mtls(allowed_subjects=("client1",)),
        token=TokenSettings(tokens=("s3cret",)),
    )
    async with rest_server(settings_with(tmp_path, auth)) as url:
        async with httpx.AsyncClient(verify=pki.client_ssl(None), timeout=30) as client:
            bare = await client.get(url + "/instances")
            with_token = await client.get(
                url + "/instances", headers={"Authorization": "Bearer s3cret"}
            )
        by_cert = await get(pki, url, pki.client("client1"))
        with pytest.raises(httpx.TransportError):
            await get(pki, url, pki.client("client1", ca=pki.other_ca))
    assert bare.status_code == 401
    assert bare.json()["code"] == "UNAUTHORIZED"
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert with_token.status_code == 200
    assert by_cert.status_code == 200


async def test_each_kept_alive_connection_is_judged_by_its_own_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    auth = mtls_only(pki, tmp_path, allowed_subjects=("client1",))
    async with (
        rest_server(settings_with(tmp_path, auth)) as url,
        httpx.AsyncClient(verify=pki.client_ssl(pki.client("client1")), timeout=30) as good,
        httpx.AsyncClient(verify=pki.client_ssl(pki.client("mallory")), timeout=30) as bad,
    ):
        statuses = [
            (await good.get(url + "/instances")).status_code,
            (await bad.get(url + "/instances")).status_code,
            (await good.get(url + "/instances")).status_code,
            (await bad.get(url + "/instances")).status_code,
        ]
    assert statuses == [200, 403, 200, 403]
