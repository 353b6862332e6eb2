"""GPU discovery and the `gpu` field -> `CUDA_VISIBLE_DEVICES`.

Detection asks NVML first (the driver's own library, via nvidia-ml-py), then `nvidia-smi`,
and finds nothing on a CPU host. A `gpu` that names a device the host does not have fails
that one instance (`GpuNotFound`), never the whole file. Unlike tei-manager, the child never
inherits the manager's own `CUDA_VISIBLE_DEVICES`: the value is always set explicitly.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Protocol

import pynvml

from tei_reconciler.desired.spec import GpuSpec
from tei_reconciler.errors import PermanentError


class Nvml(Protocol):
    """What detection uses of NVML (the `pynvml` module itself is one)."""

    def nvmlInit(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int: ...

    def nvmlShutdown(self) -> None: ...


def _nvml_count(nvml: Nvml) -> int | None:
    try:
        nvml.nvmlInit()
    except Exception:  # no driver, no library, no device: all mean "ask someone else"
        return None
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _smi_count(smi: str | None) -> int | None:
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def detect_gpus(
    *,
    nvml: Nvml = pynvml,
    find_smi: Callable[[], str | None] = lambda: shutil.which("nvidia-smi"),
) -> tuple[int, ...]:
    """Indexes of the GPUs on this host; empty on a CPU host. The two sources are
    parameters so tests can stand in for a driver (NVML) and a `nvidia-smi` executable."""
    count = _nvml_count(nvml)
    if count is None:
        count = _smi_count(find_smi())
    return tuple(range(count or 0))


def free_memory(index: int) -> int | None:
    """Free bytes on GPU `index` as NVML reports them; None without NVML or that GPU."""
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def cuda_visible_devices(gpu: GpuSpec, detected: tuple[int, ...]) -> str:
    """The child's `CUDA_VISIBLE_DEVICES` for `gpu` ("" hides every GPU).

    Raises PermanentError("GpuNotFound") when `gpu` names an index the host lacks.
    """
    if gpu == "none":
        return ""
    if gpu == "all":
        return ",".join(str(i) for i in detected)
    wanted = (gpu,) if isinstance(gpu, int) else tuple(gpu)
    missing = [i for i in wanted if i not in detected]
    if missing:
        have = ", ".join(str(i) for i in detected) or "none"
        raise PermanentError(
            "GpuNotFound",
            f"gpu {', '.join(str(i) for i in missing)} not found on this host (GPUs: {have})",
        )
    return ",".join(str(i) for i in wanted)
