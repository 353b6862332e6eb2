"""Building the API in process: a real StateFile in a tmp dir, a StatusStore filled by hand,
an httpx client over ASGITransport, and a stand-in for the controller's two callables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware

from tei_reconciler.api import create_app
from tei_reconciler.api.context import ModelCommands
from tei_reconciler.desired.spec import DesiredState, InstanceSpec, spec_hash
from tei_reconciler.desired.statefile import StateFile
from tei_reconciler.planner.phase import Phase
from tei_reconciler.planner.plan import Action, plan
from tei_reconciler.planner.policy import Policy
from tei_reconciler.planner.status import InstanceStatus
from tei_reconciler.settings import Settings
from tei_reconciler.store import StatusStore


@dataclass
class Controller:
    """Stands in for the controller behind the API's two callables. `preview` is the real
    planner, on a host where nothing runs yet: what the API shows is what it decides."""

    dirty: int = 0
    hooks: list[Callable[[], None]] = field(default_factory=list)
    policy: Policy = field(default_factory=lambda: Policy.of(Settings()))

    def on_change(self) -> None:
        self.dirty += 1
        for hook in self.hooks:
            hook()

    def preview(self, desired: DesiredState) -> list[Action]:
        actions, _ = plan(desired, {}, 0.0, policy=self.policy)
        return actions


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Starlette
    statefile: StateFile
    store: StatusStore
    settings: Settings
    controller: Controller
    runtime: Path

    def file_text(self) -> str:
        return self.statefile.path.read_text() if self.statefile.path.exists() else ""


def make_settings(runtime: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "runtime_dir": str(runtime),
        "api_port": 9000,
        "grpc_port": 9001,
        "instance_port_range": (8080, 8090),
        "max_instances": 8,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def build(
    tmp_path: Path,
    settings: Settings | None = None,
    middleware: Sequence[Middleware] = (),
    models: ModelCommands | None = None,
    store: StatusStore | None = None,
) -> tuple[Starlette, Api]:
    runtime = tmp_path / "runtime"
    (runtime / "logs").mkdir(parents=True, exist_ok=True)
    settings = settings or make_settings(runtime)
    statefile = StateFile(
        tmp_path / "state.toml",
        reserved_ports=settings.reserved_ports,
        max_instances=settings.max_instances,
    )
    store = store or StatusStore()
    controller = Controller()
    app = create_app(
        statefile=statefile,
        store=store,
        settings=settings,
        on_change=controller.on_change,
        preview=controller.preview,
        middleware=middleware,
        models=models,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    return app, Api(client, app, statefile, store, settings, controller, runtime)


def observed(
    spec: InstanceSpec, phase: Phase = Phase.RUNNING, *, ready: bool = True, **fields: object
) -> InstanceStatus:
    """A status record as the controller would write it."""
    values: dict[str, object] = {
        "name": spec.name,
        "spec": spec,
        "phase": phase,
        "pid": 4242 if phase is Phase.RUNNING else None,
        "port": spec.port or 8080,
        "prometheus_port": 9100,
        "created_at": 1_700_000_000.0,
        "ready_since": 1_700_000_001.0 if ready and phase is Phase.RUNNING else None,
        "spec_hash": spec_hash(spec) if phase is Phase.RUNNING else None,
    }
    values.update(fields)
    return InstanceStatus(**values)  # type: ignore[arg-type]
