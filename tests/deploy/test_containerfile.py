"""What can be checked of the Containerfile without a container engine: its COPY sources
exist, its command is one `tei-reconciler run` accepts, and it exposes the settings' ports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tei_reconciler.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Containerfile ends inside a continued line"
    pairs = []
    for line in joined:
        word, _, rest = line.partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


def of(kind: str) -> list[str]:
    return [args for word, args in instructions() if word == kind]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def command() -> list[str]:
    entrypoint = exec_form(of("ENTRYPOINT")[-1]) if of("ENTRYPOINT") else []
    return entrypoint + exec_form(of("CMD")[-1])


def image_config() -> tuple[str, Settings]:
    """The --config path of the image's command and the settings the baked file gives."""
    argv = command()
    path = argv[argv.index("--config") + 1]
    for args in of("COPY"):
        parts = args.split()
        if parts[-1] == path and not parts[0].startswith("--from"):
            return path, load_settings({}, {}, ROOT / parts[0])
    raise AssertionError(f"no COPY puts a file at the command's config path {path}")


def test_every_copied_source_exists_in_the_repository() -> None:
    copies = [a.split() for a in of("COPY") if not a.startswith("--from")]
    assert copies
    for parts in copies:
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


def test_the_image_runs_tei_reconciler_run_with_flags_it_accepts() -> None:
    argv = command()
    assert "tei-reconciler" in argv
    run_args = argv[argv.index("tei-reconciler") + 1 :]
    assert run_args[0] == "run"
    help_text = subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    flags = [a for a in run_args[1:] if a.startswith("--")]
    assert flags == ["--config"]
    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), f"{flag} not in run --help"


def test_the_exposed_ports_are_the_settings_defaults_and_the_image_config() -> None:
    exposed = sorted(int(p.split("/")[0]) for args in of("EXPOSE") for p in args.split())
    defaults = Settings()
    assert exposed == sorted([defaults.api_port, defaults.grpc_port])
    _, settings = image_config()
    assert exposed == sorted([settings.api_port, settings.grpc_port])


def test_the_image_keeps_state_and_runtime_files_on_the_data_volume() -> None:
    _, settings = image_config()
    assert of("VOLUME")
    assert "/data" in of("VOLUME")[-1]
    assert settings.state_file.startswith("/data/")
    assert settings.runtime_dir.startswith("/data/")
    assert settings.api_host == "0.0.0.0"
    assert settings.instance_host == "127.0.0.1"


def test_the_image_runs_as_a_non_root_user_with_a_health_check() -> None:
    user = of("USER")[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert "/health" in of("HEALTHCHECK")[-1]


def test_the_base_image_is_a_build_argument_defaulting_to_python_slim() -> None:
    assert instructions()[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    stages = of("FROM")
    assert stages[0].split()[0] == "${BASE_IMAGE}"
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the runtime image"
