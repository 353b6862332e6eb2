"""gRPC auth on both data planes: the handshake verifies the client certificate (the grpcio
router's credentials, or Envoy's TLS), then every call is checked against the same exact
allowlists and tokens as REST (the interceptor, or Envoy's Lua filter), with the same
outcomes; the health service stays open to probes unless configured otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.settings import AuthSettings, TokenSettings

from .pki import Pki
from .servers import grpc_router, settings_with
from support.grpc_status import answered
from support.waiting import eventually

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
TOKEN = AuthSettings(providers=("token",), token=TokenSettings(tokens=("s3cret",)))


@asynccontextmanager
async def tls_channel(
    pki: Pki, port: int, leaf: trustme.LeafCert | None
) -> AsyncIterator[grpc.aio.Channel]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem.bytes(),
        private_key=leaf.private_key_pem.bytes() if leaf else None,
        certificate_chain=leaf.cert_chain_pems[0].bytes() if leaf else None,
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        yield channel


@asynccontextmanager
async def plaintext(
    tmp_path: Path, data_plane: str, auth: AuthSettings
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel without TLS to a router on `data_plane` that authenticates with `auth`."""
    async with (
        grpc_router(settings_with(tmp_path, auth), data_plane) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield channel


async def check(channel: grpc.aio.Channel, **kwargs: object) -> grpc.StatusCode:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30, **kwargs
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    assert reply.status == SERVING
    return grpc.StatusCode.OK


async def watch_first(channel: grpc.aio.Channel) -> grpc.StatusCode:
    call = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=30
    )
    try:
        async for reply in call:
            assert reply.status == SERVING
            return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        call.cancel()
    return grpc.StatusCode.UNKNOWN


async def reflect(channel: grpc.aio.Channel, **kwargs: object) -> grpc.StatusCode:
    """A guarded call the router answers itself (no instance behind it): reflection's service
    list. OK only with the real answer in it."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async def replies() -> list[reflection_pb2.ServerReflectionResponse]:
        return [r async for r in call(ask(), timeout=30, **kwargs)]

    outcome = await answered(replies)
    if isinstance(outcome, grpc.aio.AioRpcError):
        return outcome.code()
    services = {s.name for s in outcome[0].list_services_response.service}
    assert {"tei.v1.Embed", "tei_multiplexer.v1.TeiMultiplexer"} <= services
    return grpc.StatusCode.OK


async def test_an_allowed_cn_is_served_and_another_cn_is_permission_denied(
    pki: Pki, tmp_path: Path, data_plane: str
) -> None:
    auth = AuthSettings(
        providers=("mtls",), mtls=pki.mtls(allowed_subjects=("client1",)), exempt_grpc_services=()
    )
    async with grpc_router(settings_with(tmp_path, auth), data_plane) as port:
        async with tls_channel(pki, port, pki.client("client1")) as channel:
            allowed_unary = await check(channel)
            allowed_stream = await watch_first(channel)
            allowed_reflection = await reflect(channel)
        async with tls_channel(pki, port, pki.client("client10")) as channel:
            denied_unary = await check(channel)
            denied_stream = await watch_first(channel)
    assert allowed_unary == grpc.StatusCode.OK
    assert allowed_stream == grpc.StatusCode.OK
    assert allowed_reflection == grpc.StatusCode.OK
    assert denied_unary == grpc.StatusCode.PERMISSION_DENIED
    assert denied_stream == grpc.StatusCode.PERMISSION_DENIED


async def test_a_san_allowlist_matches_the_dns_entry_of_the_client_certificate(
    pki: Pki, tmp_path: Path, data_plane: str
) -> None:
    auth = AuthSettings(
        providers=("mtls",), mtls=pki.mtls(allowed_sans=("DNS:client.example.com",))
    )
    async with grpc_router(settings_with(tmp_path, auth), data_plane) as port:
        async with tls_channel(pki, port, pki.client("x", "client.example.com")) as channel:
            allowed = await reflect(channel)
        async with tls_channel(pki, port, pki.client("x", "other.example.com")) as channel:
            denied = await reflect(channel)
    assert allowed == grpc.StatusCode.OK
    assert denied == grpc.StatusCode.PERMISSION_DENIED


async def test_clients_without_a_certificate_or_from_another_ca_cannot_connect(
    pki: Pki, tmp_path: Path, data_plane: str
) -> None:
    auth = AuthSettings(providers=("mtls",), mtls=pki.mtls())
    async with grpc_router(settings_with(tmp_path, auth), data_plane) as port:
        async with tls_channel(pki, port, None) as channel:
            anonymous = await check(channel)
        async with tls_channel(pki, port, pki.client("c", ca=pki.other_ca)) as channel:
            foreign = await check(channel)
    assert anonymous == grpc.StatusCode.UNAVAILABLE
    assert foreign == grpc.StatusCode.UNAVAILABLE


async def test_a_missing_or_wrong_token_is_unauthenticated_and_health_stays_open(
    tmp_path: Path,
    data_plane: str,
) -> None:
    async with plaintext(tmp_path, data_plane, TOKEN) as channel:
        missing = await reflect(channel)
        wrong = await reflect(channel, metadata=(("authorization", "Bearer nope"),))
        right = await reflect(channel, metadata=(("authorization", "Bearer s3cret"),))
        twice = await reflect(
            channel,
            metadata=(("authorization", "Bearer nope"), ("authorization", "Bearer s3cret")),
        )
        health = await check(channel)
    assert missing == grpc.StatusCode.UNAUTHENTICATED
    assert wrong == grpc.StatusCode.UNAUTHENTICATED
    assert right == grpc.StatusCode.OK
    assert twice == grpc.StatusCode.UNAUTHENTICATED  # never "last one wins"
    assert health == grpc.StatusCode.OK


async def info(channel: grpc.aio.Channel, **kwargs: object) -> grpc.StatusCode:
    """A plain tei.v1 call (no instance behind the port: answered by the router itself)."""
    try:
        await tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=30, **kwargs)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def refusal(channel: grpc.aio.Channel, **kwargs: object) -> tuple[str, str]:
    try:
        await tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=30, **kwargs)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


async def test_typed_san_entries_match_ip_and_email_sans_without_regard_to_email_case(
    pki: Pki, tmp_path: Path, data_plane: str
) -> None:
    auth = AuthSettings(
        providers=("mtls",),
        mtls=pki.mtls(allowed_sans=("IP:10.0.0.7", "email:Ops@Example.com")),
    )
    async with grpc_router(settings_with(tmp_path, auth), data_plane) as port:
        async with tls_channel(pki, port, pki.client("by-ip", "10.0.0.7")) as channel:
            by_ip = await info(channel)
        async with tls_channel(pki, port, pki.client("by-mail", "ops@example.com")) as channel:
            by_email = await info(channel)
        async with tls_channel(pki, port, pki.client("other", "10.0.0.8")) as channel:
            other = await refusal(channel)
    assert by_ip not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert by_email not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert other == ("PERMISSION_DENIED", "client certificate 'other' is not allowed")


async def test_refusals_say_why_in_the_same_words_on_both_data_planes(
    pki: Pki, tmp_path: Path, data_plane: str
) -> None:
    auth = AuthSettings(
        providers=("mtls", "token"),
        mtls=pki.mtls(allowed_subjects=("client1",)),
        token=TokenSettings(tokens=("s3cret",)),
    )
    async with (
        grpc_router(settings_with(tmp_path, auth), data_plane) as port,
        tls_channel(pki, port, pki.client("client10")) as channel,
    ):
        denied = await refusal(channel)
        bad_token = await refusal(channel, metadata=(("authorization", "Bearer nope"),))
        malformed = await refusal(channel, metadata=(("authorization", "Basic abc"),))
        good_token = await refusal(channel, metadata=(("authorization", "Bearer s3cret"),))
    not_allowed = ("PERMISSION_DENIED", "client certificate 'client10' is not allowed")
    assert denied == not_allowed
    assert bad_token == not_allowed  # a known caller who is not allowed beats a bad token
    assert malformed == not_allowed
    assert good_token[0] not in ("PERMISSION_DENIED", "UNAUTHENTICATED")  # any provider allows


async def test_token_refusals_distinguish_missing_malformed_and_unknown_tokens(
    tmp_path: Path, data_plane: str
) -> None:
    async with plaintext(tmp_path, data_plane, TOKEN) as channel:
        missing = await refusal(channel)
        malformed = await refusal(channel, metadata=(("authorization", "Basic abc"),))
        unknown = await refusal(channel, metadata=(("authorization", "Bearer nope"),))
    assert missing == ("UNAUTHENTICATED", "authentication required")
    assert malformed == ("UNAUTHENTICATED", "Authorization must be 'Bearer <token>'")
    assert unknown == ("UNAUTHENTICATED", "invalid bearer token")


async def test_a_tokens_file_change_takes_effect_without_a_restart(
    tmp_path: Path, data_plane: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated daily\nfirst-token\n")
    auth = AuthSettings(providers=("token",), token=TokenSettings(tokens_file=str(tokens)))
    first = (("authorization", "Bearer first-token"),)
    second = (("authorization", "Bearer second-token"),)
    async with plaintext(tmp_path, data_plane, auth) as channel:
        before = await info(channel, metadata=first)
        tokens.write_text("second-token\n")

        async def first_refused() -> bool:
            code: grpc.StatusCode = await info(channel, metadata=first)
            return bool(code == grpc.StatusCode.UNAUTHENTICATED)

        await eventually(first_refused, what="the removed token to be refused")
        after = await info(channel, metadata=second)
    assert before not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert after not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
