"""An instance API key, end to end: read from `api_key_file`, given to TEI as `API_KEY`, sent
by the probe and by the data plane, and never shown: not in the command line, the status,
the events or the log. A TEI that refuses the probe's key fails at once, with the reason."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import anyio
import grpc
import psutil
import pytest

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2 as mux
from tei_reconciler.protos.tei_multiplexer.v1 import multiplexer_pb2_grpc

from .reconciler_harness import fast_settings, instance_toml, reconciler, script
from support.envoy import router_calls
from support.waiting import DEADLINE

pytestmark = pytest.mark.anyio
KEY = "k3y-Of-alpha-9f1c2e"


def embed(target: str, key: str, value: str, *, auth: str | None = None) -> grpc.StatusCode:
    """The status of one Embed call routed by metadata `key` (and, given, `authorization`)."""
    metadata = [(key, value)] + ([("authorization", auth)] if auth else [])
    with grpc.insecure_channel(target) as channel:
        try:
            reply = tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs="hello"), metadata=metadata, timeout=DEADLINE
            )
        except grpc.RpcError as exc:
            return exc.code()
    assert len(reply.embeddings) == 384
    return grpc.StatusCode.OK


async def test_an_instance_with_an_api_key_serves_through_the_data_plane_and_never_shows_it(
    tmp_path: Path, data_plane: str, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "alpha.key"
    key_file.write_text(KEY + "\n")
    settings = fast_settings(tmp_path, data_plane=data_plane)
    state = instance_toml("alpha", "hash/384", api_key_file=str(key_file))
    async with (
        reconciler(settings, state, with_front_ends=True) as h,
        h.api() as api,
    ):
        status = await h.ready("alpha")  # the probe sent the key: Info answers only with it
        assert status.pid is not None
        process = psutil.Process(status.pid)
        assert process.environ()["API_KEY"] == KEY
        assert not [arg for arg in process.cmdline() if KEY in arg]
        assert embed(f"127.0.0.1:{status.port}", "x", "y") == grpc.StatusCode.UNAUTHENTICATED
        for key, value in (("x-tei-instance", "alpha"), ("x-tei-model", "hash/384")):
            # The router runs on this event loop: the blocking client call goes to a thread.
            answer = await anyio.to_thread.run_sync(embed, h.grpc_target, key, value)
            assert answer == grpc.StatusCode.OK, key
            wrong = partial(embed, h.grpc_target, key, value, auth="Bearer wrong")
            assert await anyio.to_thread.run_sync(wrong) == grpc.StatusCode.OK, key
        shown = [
            (await api.get(path)).text
            for path in ("/instances", "/instances/alpha", "/instances/alpha/events", "/plan")
        ]
    assert json.loads(shown[1])["spec"]["api_key_file"] == str(key_file)
    assert not [text for text in shown if KEY in text]
    assert KEY not in caplog.text


async def test_envoy_unwraps_a_multiplexer_call_to_a_keyed_instance_and_sends_it_the_key(
    tmp_path: Path, envoy: str
) -> None:
    """The instance refuses a call without its key or with another one; the multiplexer call
    (carrying a wrong key, meant for the reconciler) reaches it with its own, by name and by
    model, without the hop through the Python router behind Envoy."""
    key_file = tmp_path / "alpha.key"
    key_file.write_text(KEY + "\n")
    settings = fast_settings(tmp_path, data_plane="envoy")
    state = instance_toml("alpha", "hash/384", api_key_file=str(key_file))
    request = tei_pb2.EmbedRequest(inputs="hello")
    async with reconciler(settings, state, with_front_ends=True) as h:
        status = await h.ready("alpha")
        await h.plane.wait_routed("alpha")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{status.port}") as channel:
            direct = tei_pb2_grpc.EmbedStub(channel).Embed
            expected = await direct(request, metadata=(("authorization", f"Bearer {KEY}"),))
            refused = []
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await direct(request, metadata=metadata, timeout=DEADLINE)
                refused.append(error.value.code())
        before = await router_calls(h.plane)
        async with grpc.aio.insecure_channel(h.grpc_target) as channel:
            stub = multiplexer_pb2_grpc.TeiMultiplexerStub(channel)
            replies = [
                await stub.Embed(
                    mux.EmbedRequest(target=target, request=request),
                    metadata=(("authorization", "Bearer wrong"),),
                    timeout=DEADLINE,
                )
                for target in (mux.Target(instance_name="alpha"), mux.Target(model_id="hash/384"))
            ]
        relayed = await router_calls(h.plane) - before
    assert refused == [grpc.StatusCode.UNAUTHENTICATED] * 2
    assert len(expected.embeddings) == 384
    assert [list(r.embeddings) for r in replies] == [list(expected.embeddings)] * 2
    assert relayed == 0


async def test_an_unreadable_api_key_file_fails_the_instance_with_the_reason(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such.key"
    settings = fast_settings(tmp_path)
    state = instance_toml("alpha", api_key_file=str(missing)) + instance_toml("beta")
    async with reconciler(settings, state) as h:
        failed = await h.phase_is("alpha", "Failed")
        assert failed.reason == "ApiKeyUnreadable"
        assert failed.message == f"api_key_file {missing}: No such file or directory"
        assert (await h.ready("beta")).pid is not None


#: A TEI started with a key of its own: the reconciler's probe cannot know it.
KEYED_ELSEWHERE = """
import os
import sys

engine = [sys.executable, "-m", "tei_reconciler", "engine", *sys.argv[1:]]
os.execv(sys.executable, [*engine, "--api-key", "a-key-the-reconciler-never-saw"])
"""


async def test_a_tei_that_refuses_the_probes_key_fails_at_once_as_unauthenticated(
    tmp_path: Path,
) -> None:
    binary = script(tmp_path, "keyed-tei", KEYED_ELSEWHERE)
    settings = fast_settings(tmp_path, tei_binary=str(binary), startup_timeout_secs=3600.0)
    async with reconciler(settings, instance_toml("alpha")) as h:
        failed = await h.phase_is("alpha", "Failed")  # not an hour of Starting
        assert failed.reason == "Unauthenticated"
        assert failed.message.startswith("the instance refused the probe (UNAUTHENTICATED")
        assert "set api_key_file" in failed.message
        assert failed.pid is None  # it was stopped
        assert failed.last_exit is not None
        assert failed.last_exit.reason == "Unauthenticated"
        assert "a-key-the-reconciler-never-saw" not in str(failed)
