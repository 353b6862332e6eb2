"""Every collaborator of the control loop, built from the settings in one place.

The composition root (`service.py`) calls `build_controller`; the controller, the actuator,
the drivers and the desired source receive what they work with and never construct it. Tests
pass their fakes in place of the defaults (a clock, a loader, a driver, a prober, the GPUs
and the environment children inherit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tei_reconciler._types import Clock, SystemClock
from tei_reconciler.control.actuator import Actuator, Drain
from tei_reconciler.control.controller import Controller
from tei_reconciler.control.models import ModelGlue, flavour_of
from tei_reconciler.control.source import DesiredSource, Loader, file_loader
from tei_reconciler.drivers.gpus import detect_gpus
from tei_reconciler.drivers.ports import PortBook
from tei_reconciler.drivers.probe import Prober, make_prober
from tei_reconciler.drivers.process import Driver, ProcessDriver
from tei_reconciler.models.cache import HubCache
from tei_reconciler.models.config import hub_config
from tei_reconciler.models.hub import Fetcher
from tei_reconciler.models.registry import ModelRegistry
from tei_reconciler.paths import RuntimeDir
from tei_reconciler.planner.backoff import BackoffPolicy
from tei_reconciler.planner.policy import Policy
from tei_reconciler.routing import RoutingTable
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore


def build_controller(
    settings: Settings,
    *,
    store: StatusStore,
    table: RoutingTable,
    clock: Clock | None = None,
    loader: Loader | None = None,
    driver: Driver | None = None,
    prober: Prober | None = None,
    gpus: tuple[int, ...] | None = None,
    base_env: Mapping[str, str] | None = None,
    drain: Drain | None = None,
    models: ModelGlue | None = None,
) -> Controller:
    """The controller of `settings.state_file`, with its source, drivers and actuator;
    `drain` is the data plane's, which the actuator waits on before stopping an instance."""
    clock = clock or SystemClock()
    runtime_dir = RuntimeDir(Path(settings.runtime_dir))
    owner = Controller.owner_of(settings)
    source = DesiredSource(
        Path(settings.state_file),
        loader or file_loader(settings.reserved_ports, settings.max_state_bytes),
        store=store,
        clock=clock,
        max_bytes=settings.max_state_bytes,
    )
    driver = driver or ProcessDriver(runtime_dir=runtime_dir.root, owner=owner, clock=clock)
    prober = prober or make_prober(settings.tei_protocol)
    ports = PortBook(
        runtime_dir.ports,
        host=settings.instance_host,
        instance_range=settings.instance_port_range,
        prometheus_range=settings.prometheus_port_range,
        reserved=settings.reserved_ports,
    )
    policy = Policy.of(settings)
    actuator = Actuator(
        settings,
        driver=driver,
        prober=prober,
        ports=ports,
        store=store,
        clock=clock,
        policy=policy,
        backoff=BackoffPolicy(
            initial=settings.backoff_initial_secs,
            maximum=settings.backoff_max_secs,
            reset_after=settings.backoff_reset_secs,
        ),
        gpus=detect_gpus() if gpus is None else gpus,
        base_env=_child_env(os.environ if base_env is None else base_env, models),
        owner=owner,
        drain=drain,
        models=models,
    )
    return Controller(
        settings,
        store=store,
        table=table,
        clock=clock,
        source=source,
        driver=driver,
        prober=prober,
        ports=ports,
        policy=policy,
        actuator=actuator,
        models=models,
    )


def _child_env(base: Mapping[str, str], models: ModelGlue | None) -> Mapping[str, str]:
    return base if models is None else models.child_env(base)


def build_models(
    settings: Settings, *, store: StatusStore, env: Mapping[str, str]
) -> tuple[ModelRegistry, ModelGlue]:
    """The model registry over the Hugging Face cache the settings (or `env`) name, and the
    controller's glue to it. The caller points `registry.changed` at the controller."""
    hub = hub_config(settings, env)
    registry = ModelRegistry(
        fetcher=Fetcher(HubCache(hub.cache)),
        store=store,
        clock=SystemClock(),
        endpoint=hub.endpoint,
        flavour=flavour_of(settings),
        token_file=hub.token_file,
        offline=hub.offline,
        max_concurrent=hub.max_concurrent,
        backoff=BackoffPolicy(
            initial=settings.backoff_initial_secs, maximum=settings.backoff_max_secs
        ),
    )
    return registry, ModelGlue(settings, registry, hub)
