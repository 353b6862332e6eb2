"""How an instance is launched: argv, a cleaned environment, GPUs, binary and log rotation."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

import msgspec
import pytest

from tei_reconciler.desired.spec import (
    MARKER_INSTANCE,
    MARKER_OWNER,
    MARKER_SPEC_HASH,
    InstanceSpec,
    spec_hash,
)
from tei_reconciler.drivers.command import build_argv, build_env, read_api_key, resolve_binary
from tei_reconciler.drivers.gpus import cuda_visible_devices
from tei_reconciler.drivers.logrotate import Done, hand_over_log, rotate_log
from tei_reconciler.drivers.ports import PortBook
from tei_reconciler.errors import PermanentError

from support.net import port_base

SPEC = InstanceSpec(
    name="bge",
    model_id="BAAI/bge-small-en-v1.5",
    revision="main",
    pooling="mean",  # type: ignore[arg-type]
    auto_truncate=False,
    extra_args=("--disable-spans",),
    env={"HF_HUB_OFFLINE": "1"},
)


def test_argv_passes_every_managed_flag_explicitly_and_extra_args_last() -> None:
    argv = build_argv(["tei"], SPEC, host="127.0.0.1", port=8080, prom=9100)
    assert argv[:9] == [
        "tei",
        "--model-id",
        "BAAI/bge-small-en-v1.5",
        "--port",
        "8080",
        "--hostname",
        "127.0.0.1",
        "--prometheus-port",
        "9100",
    ]
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert flags["--max-batch-tokens"] == "16384"
    assert flags["--revision"] == "main"
    assert flags["--pooling"] == "mean"
    assert flags["--auto-truncate"] == "false"
    assert argv[-2:] == ["--json-output", "--disable-spans"]


def test_env_drops_tei_generic_names_and_sets_markers_and_gpus() -> None:
    base = {
        "PATH": "/usr/bin",
        "PORT": "80",
        "HOSTNAME": "container-id",
        "API_KEY": "secret",
        "MAX_BATCH_TOKENS": "1",
        "MODEL_ID": "x",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "TEI_RECONCILER_API_PORT": "9000",
        "HF_TOKEN": "hf_x",
    }
    env = build_env(base, SPEC, cuda="1", owner="o" * 16)
    assert env["PATH"] == "/usr/bin"
    assert env["HF_TOKEN"] == "hf_x"  # not TEI's flag names: the user's to pass
    for name in (
        "PORT",
        "HOSTNAME",
        "API_KEY",
        "MAX_BATCH_TOKENS",
        "MODEL_ID",
        "TEI_RECONCILER_API_PORT",
    ):
        assert name not in env
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env[MARKER_OWNER] == "o" * 16
    assert env[MARKER_INSTANCE] == "bge"
    assert env[MARKER_SPEC_HASH] == spec_hash(SPEC)


def test_gpu_field_maps_to_cuda_visible_devices() -> None:
    assert cuda_visible_devices("none", (0, 1)) == ""
    assert cuda_visible_devices("all", (0, 1)) == "0,1"
    assert cuda_visible_devices("all", ()) == ""
    assert cuda_visible_devices(1, (0, 1)) == "1"
    assert cuda_visible_devices((1, 0), (0, 1)) == "1,0"
    with pytest.raises(PermanentError) as info:
        cuda_visible_devices(2, (0, 1))
    assert info.value.reason == "GpuNotFound"


def test_binary_choice_auto_builtin_or_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resolve_binary("auto", "grpc") == [sys.executable, "-m", "tei_reconciler", "engine"]
    assert resolve_binary("builtin", "http")[-1] == "--http"
    router = tmp_path / "text-embeddings-router"
    router.write_text("#!/bin/sh\n")
    router.chmod(0o755)
    assert resolve_binary("auto", "grpc") == [str(router)]
    assert resolve_binary("/opt/tei", "grpc") == ["/opt/tei"]


def test_the_api_key_reaches_the_child_as_api_key_and_never_its_command_line(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    spec = msgspec.structs.replace(SPEC, api_key_file=str(key_file))
    key = read_api_key(str(key_file))
    env = build_env({"API_KEY": "inherited"}, spec, cuda="", owner="o" * 16, api_key=key)
    assert env["API_KEY"] == "s3cret-key"
    argv = build_argv(["tei"], spec, host="127.0.0.1", port=8080, prom=9100)
    assert not [arg for arg in argv if "s3cret" in arg or "key" in arg]
    assert "API_KEY" not in build_env({"API_KEY": "inherited"}, SPEC, cuda="", owner="o" * 16)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "No such file or directory"),
        (b"  \n", "empty"),
        (b"one\ntwo\n", "more than one line"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_an_unusable_api_key_file_is_a_clear_permanent_error(
    tmp_path: Path, content: bytes | None, why: str
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_bytes(content)
    with pytest.raises(PermanentError) as refused:
        read_api_key(str(key_file))
    assert refused.value.reason == "ApiKeyUnreadable"
    assert refused.value.message == f"api_key_file {key_file}: {why}"


def test_copy_truncate_rotation_keeps_the_writer_appending(tmp_path: Path) -> None:
    log = tmp_path / "bge.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for n in range(3):
            os.write(fd, f"generation {n}\n".encode() * 100)
            assert rotate_log(log, max_bytes=100, backups=2)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after\n"
    assert (tmp_path / "bge.log.1").read_text().startswith("generation 2")
    assert (tmp_path / "bge.log.2").read_text().startswith("generation 1")
    assert not (tmp_path / "bge.log.3").exists()
    assert not rotate_log(log, max_bytes=100, backups=2)


def test_a_rollout_hands_the_instance_log_to_the_new_process_and_each_keeps_writing_its_own(
    tmp_path: Path,
) -> None:
    log, new_log = tmp_path / "bge.log", tmp_path / "bge.next.log"
    (tmp_path / "bge.log.1").write_text("older\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    old, new = os.open(log, flags), os.open(new_log, flags)
    try:
        os.write(old, b"old serving\n")
        os.write(new, b"new loading\n")
        moved = hand_over_log(log, new_log, backups=2)
        os.write(old, b"old draining\n")
        os.write(new, b"new serving\n")
    finally:
        os.close(old)
        os.close(new)
    assert moved == tmp_path / "bge.log.1"
    assert log.read_text() == "new loading\nnew serving\n"
    assert moved.read_text() == "old serving\nold draining\n"
    assert (tmp_path / "bge.log.2").read_text() == "older\n"
    assert not new_log.exists()


def test_a_log_whose_backup_cannot_be_written_is_emptied_without_one(tmp_path: Path) -> None:
    """A full disk: the copy fails half way. Emptying the log anyway is what frees space;
    the partial copy is removed and the older backups are kept."""
    log = tmp_path / "bge.log"
    log.write_bytes(b"x" * 500)
    (tmp_path / "bge.log.1").write_text("older\n")

    def disk_full(source: Path, target: Path) -> None:
        target.write_bytes(source.read_bytes()[:100])  # what fitted before the disk filled
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    rotation = rotate_log(log, max_bytes=100, backups=3, copy=disk_full)
    assert rotation
    assert rotation.done is Done.TRUNCATED
    assert rotation.error == os.strerror(errno.ENOSPC)
    assert log.read_bytes() == b""
    assert not (tmp_path / "bge.log.1").exists()
    assert (tmp_path / "bge.log.2").read_text() == "older\n"
    assert not rotate_log(log, max_bytes=100, backups=3, copy=disk_full)  # room again


def _book(tmp_path: Path, start: int) -> PortBook:
    return PortBook(
        tmp_path / "ports.json",
        host="127.0.0.1",
        instance_range=(start, start + 50),
        prometheus_range=(start + 50, start + 100),
    )


def test_auto_ports_are_sticky_across_reconciler_restarts(tmp_path: Path) -> None:
    base = port_base()
    first = _book(tmp_path, base).assign(InstanceSpec(name="a", model_id="m"))
    other = _book(tmp_path, base).assign(InstanceSpec(name="b", model_id="m"))
    again = _book(tmp_path, base).assign(InstanceSpec(name="a", model_id="m"))
    assert again == first
    assert {other.port, other.prometheus_port}.isdisjoint({first.port, first.prometheus_port})


def test_allocation_skips_ports_other_processes_hold(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        base = held.getsockname()[1]  # the first port of the range is held
        got = _book(tmp_path, base).assign(InstanceSpec(name="a", model_id="m"))
    assert got.port != base


def test_an_explicit_port_held_by_another_process_names_the_holder(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PermanentError) as info:
            _book(tmp_path, port_base()).assign(InstanceSpec(name="a", model_id="m", port=port))
    assert info.value.reason == "PortInUse"
    assert f"pid {os.getpid()}" in info.value.message


def test_ports_of_a_removed_instance_are_reused_and_failed_allocations_consume_none(
    tmp_path: Path,
) -> None:
    """tei-manager's allocator moved its cursor on failed creates and never reused a
    prometheus port; here allocation is a pure function of what is taken now."""
    base = port_base()
    book = _book(tmp_path, base)
    first = book.assign(InstanceSpec(name="a", model_id="m"))
    book.release("a")
    assert book.assign(InstanceSpec(name="b", model_id="m")) == first
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PermanentError):
            book.assign(InstanceSpec(name="c", model_id="m", port=port))
    assert book.get("c") is None


def test_an_explicit_port_held_by_another_instances_auto_port_names_that_instance(
    tmp_path: Path,
) -> None:
    base = port_base()
    book = _book(tmp_path, base)
    taken = book.assign(InstanceSpec(name="b", model_id="m"))
    with socket.socket() as held:  # b's process listens on its auto-assigned port
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        held.bind(("127.0.0.1", taken.port))
        held.listen()
        with pytest.raises(PermanentError) as info:
            book.assign(InstanceSpec(name="a", model_id="m", port=taken.port))
    assert info.value.reason == "PortInUse"
    assert "instance b" in info.value.message
    assert "restart b" in info.value.message
    moved = book.assign(InstanceSpec(name="b", model_id="m"), explicit={taken.port})
    assert moved.port != taken.port  # and a restart of b does move it
