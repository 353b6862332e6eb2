"""The controller's side of the model registry: what to ask it each pass, what to tell the
planner, the checks before a start, and the environment that shares the cache with TEI.

The binary decides which weights are fetched (`flavour_of`, for every fetch the registry
makes): the built-in engine reads ONNX exports, TEI safetensors. The built-in engine needs no
cache for its stand-ins (`hash/...`) or for the packaged MiniLM when the `embedded-model`
extra is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import cache

import anyio

from tei_reconciler.desired.spec import DesiredRun, DesiredState, InstanceSpec
from tei_reconciler.drivers.command import resolve_binary
from tei_reconciler.drivers.gpus import free_memory
from tei_reconciler.engine.layout import PACKAGED_IDS, packaged_layout
from tei_reconciler.engine.types import StartupError
from tei_reconciler.models.checks import Verdict, check_start
from tei_reconciler.models.config import HubConfig
from tei_reconciler.models.registry import ModelRegistry
from tei_reconciler.models.select import Flavour
from tei_reconciler.models.wants import named_models
from tei_reconciler.planner.model_status import ModelGate
from tei_reconciler.settings import Settings


@cache
def _packaged_installed() -> bool:
    try:
        packaged_layout(next(iter(PACKAGED_IDS)))
    except StartupError:
        return False
    return True


def runs_builtin(settings: Settings) -> bool:
    """Whether the configured binary is the built-in engine."""
    return resolve_binary(settings.tei_binary, settings.tei_protocol)[0] == sys.executable


def flavour_of(settings: Settings) -> Flavour:
    """The weights the configured binary reads, so the registry fetches those."""
    return Flavour.ONNX if runs_builtin(settings) else Flavour.SAFETENSORS


class ModelGlue:
    """One reconciler's use of its model registry (`hub` says where the cache is)."""

    def __init__(self, settings: Settings, registry: ModelRegistry, hub: HubConfig) -> None:
        self.registry = registry
        self.hub = hub
        self.builtin = runs_builtin(settings)

    def ships(self, model_id: str) -> bool:
        """The binary serves `model_id` without the cache (`hash/...` is the built-in
        engine's namespace: never fetched, whatever the binary)."""
        if model_id.startswith("hash/"):
            return True
        return self.builtin and model_id in PACKAGED_IDS and _packaged_installed()

    def sync(self, desired: DesiredState) -> dict[str, ModelGate]:
        """Tell the registry the models `desired` names; the gates of the instances that
        must wait."""
        self.registry.want(named_models(desired, served_without_cache=self.ships))
        gates: dict[str, ModelGate] = {}
        for name, spec in desired.instances.items():
            if spec.state is DesiredRun.RUNNING and not self.ships(spec.model_id):
                gate = self.registry.gate(spec.model_id)
                if gate is not None:
                    gates[name] = gate
        return gates

    async def verdict(self, spec: InstanceSpec, cuda: str) -> Verdict:
        """Whether `spec` may start (file reads and NVML, so on a worker thread)."""
        facts = self.registry.facts(spec.model_id)
        return await anyio.to_thread.run_sync(
            lambda: check_start(
                spec,
                builtin=self.builtin,
                cache=self.hub.cache,
                facts=facts,
                cuda=cuda,
                free_memory=free_memory,
            )
        )

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` plus what TEI children need to find the fetched models."""
        return {**base, **self.hub.child_env()}
