"""GPU detection: NVML first, `nvidia-smi -L` when NVML is not usable, nothing on a CPU host.

NVML stands in as an object with NVML's three calls; `nvidia-smi` is a real executable
script that prints what the real one prints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tei_reconciler.drivers.gpus import detect_gpus


class FakeNvml:
    """NVML with `count` devices, or failing at `fail_at` ("init" or "count")."""

    def __init__(self, count: int = 0, fail_at: str | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.fail_at == "init":
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        if self.fail_at == "count":
            raise RuntimeError("Driver Not Loaded")
        return self.count

    def nvmlShutdown(self) -> None:
        self.shut_down = True


SMI_TWO_GPUS = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0f6c7e0a-1111-2222-3333-444455556666)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1a2b3c4d-1111-2222-3333-444455556666)
"""


def nvidia_smi(tmp_path: Path, stdout: str, code: int = 0) -> str:
    """An executable that answers `-L` as nvidia-smi does (and checks it was asked that)."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "assert sys.argv[1:] == ['-L'], sys.argv\n"
        f"sys.stdout.write({stdout!r})\n"
        f"sys.exit({code})\n"
    )
    script.chmod(0o755)
    return str(script)


def test_nvml_is_asked_first_and_nvidia_smi_is_not_run(tmp_path: Path) -> None:
    nvml = FakeNvml(count=4)
    never = tmp_path / "never"

    def smi_must_not_be_looked_up() -> str:
        never.touch()
        return "/nonexistent"

    assert detect_gpus(nvml=nvml, find_smi=smi_must_not_be_looked_up) == (0, 1, 2, 3)
    assert nvml.shut_down
    assert not never.exists()


@pytest.mark.parametrize("fail_at", ["init", "count"])
def test_without_a_usable_nvml_nvidia_smi_counts_the_gpus(tmp_path: Path, fail_at: str) -> None:
    smi = nvidia_smi(tmp_path, SMI_TWO_GPUS)
    assert detect_gpus(nvml=FakeNvml(fail_at=fail_at), find_smi=lambda: smi) == (0, 1)


def test_a_cpu_host_has_no_gpus(tmp_path: Path) -> None:
    assert detect_gpus(nvml=FakeNvml(fail_at="init"), find_smi=lambda: None) == ()
    assert detect_gpus(nvml=FakeNvml(count=0), find_smi=lambda: None) == ()


def test_an_nvidia_smi_that_cannot_reach_the_driver_means_no_gpus(tmp_path: Path) -> None:
    failing = nvidia_smi(
        tmp_path,
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        code=9,
    )
    assert detect_gpus(nvml=FakeNvml(fail_at="init"), find_smi=lambda: failing) == ()
