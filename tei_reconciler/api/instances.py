"""`/instances` routes: tei-manager's paths and bodies, as edits of the desired state.

Nothing here starts or stops a process. Create, apply, delete, start, stop and restart each
become one locked read-modify-write of the state file (the file humans and GitOps edit too);
the controller is then told to look again, and the answer shows the instance as the store sees
it (`Pending` until the controller acts). `?wait=ready` turns an edit into "edit, then block
until the instance is Ready with this very spec", like `kubectl wait`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tei_reconciler._types import PortRange
from tei_reconciler.api._http import decode_json, query_float
from tei_reconciler.api.context import ApiContext, ctx_of
from tei_reconciler.api.errors import ApiError, api_error_for, json_response
from tei_reconciler.api.schemas import (
    ApplyInstanceRequest,
    CreateInstanceRequest,
    ErrorDetail,
)
from tei_reconciler.api.views import instance_out
from tei_reconciler.desired.fields import ASSIGNED, same_spec
from tei_reconciler.desired.spec import (
    NAME_RULE,
    DesiredState,
    InstanceSpec,
    is_instance_name,
    spec_hash,
)
from tei_reconciler.planner.model_status import ModelChange
from tei_reconciler.planner.status import InstanceStatus, StoreChange

DEFAULT_WAIT_SECS = 300.0


def check_name(name: str) -> None:
    """DNS-1123 label: also what keeps names out of paths (`../x`, `a/b`)."""
    if not is_instance_name(name):
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"invalid instance name {name!r}: {NAME_RULE}",
            [ErrorDetail(field="name", message=NAME_RULE)],
        )


def split_body(body: msgspec.Struct) -> tuple[str | None, dict[str, Any]]:
    """A request body as its `name` and the fields it gives (None: not given)."""
    given = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
    return given.pop("name", None), given


def state_fields(given: dict[str, Any]) -> dict[str, Any]:
    """Given request fields as state-file keys: `gpu_id` becomes `gpu`, a port of 0 means
    "assign one"."""
    fields = {k: v for k, v in given.items() if not (k in ASSIGNED and v == 0)}
    if "gpu_id" in fields:
        if "gpu" in fields:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                "give either gpu_id or gpu, not both",
                [ErrorDetail(field="gpu_id", message="conflicts with gpu")],
            )
        fields["gpu"] = fields.pop("gpu_id")
    return fields


def check_capacity(
    ctx: ApiContext, desired: DesiredState, name: str, fields: dict[str, Any]
) -> None:
    """422 when a new instance would find no port to auto-assign. (`max_instances` is checked
    by the StateFile under its lock, so concurrent creates cannot together pass it.)"""
    if name in desired.instances or "port" in fields:
        return
    span = PortRange(*ctx.settings.instance_port_range)
    explicit = [s.port for s in desired.instances.values() if s.port is not None]
    automatic = sum(1 for s in desired.instances.values() if s.port is None)
    if automatic + 1 > span.left_for_automatic(explicit):
        raise ApiError(
            422,
            "PORT_ALLOCATION_FAILED",
            f"no free port left in instance_port_range {span} for an automatic port",
        )


def wait_timeout(request: Request) -> float | None:
    """`?wait=ready&timeout=S` as seconds to wait (None: do not wait). Checked before any
    write, so a bad value never leaves a half-done request behind."""
    wait = request.query_params.get("wait")
    seconds = query_float(request, "timeout", default=DEFAULT_WAIT_SECS)  # checked either way
    if wait is None:
        return None
    if wait != "ready":
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"wait must be 'ready', got {wait!r}",
            [ErrorDetail(field="wait", message="must be 'ready'")],
        )
    return seconds


async def wait_ready(ctx: ApiContext, spec: InstanceSpec, seconds: float) -> None:
    """Block until the store shows `spec` Ready and the data plane sends traffic to it (with
    Envoy: Envoy applied routes to its process); 504 `TIMEOUT` after `seconds`."""
    with anyio.move_on_after(seconds):
        await _store_ready(ctx, spec)
        if ctx.data_plane is not None:
            await ctx.data_plane.wait_routed(spec.name)
        return
    raise ApiError(
        504,
        "TIMEOUT",
        f"the change to {spec.name!r} was written, but it was not Ready within {seconds:g} s",
    )


async def _store_ready(ctx: ApiContext, spec: InstanceSpec) -> None:
    wanted = msgspec.to_builtins(spec)
    revision = spec_hash(spec)

    def ready(status: InstanceStatus | None) -> bool:
        # The process must run this spec: during a surge rollout the old process is Ready
        # (and shown with the new desired spec) until the new one takes over.
        return (
            status is not None
            and status.ready
            and status.spec_hash == revision
            and (status.spec == spec or same_spec(msgspec.to_builtins(status.spec), wanted))
        )

    with ctx.store.subscribe() as changes:
        if ready(ctx.store.get(spec.name)):
            return
        async for change in changes:
            if isinstance(change, ModelChange) or (
                isinstance(change, StoreChange) and change.name != spec.name
            ):
                continue  # about something else (after a Missed, look again)
            if ready(ctx.store.get(spec.name)):
                return
            await _still_desired(ctx, spec.name)


async def _still_desired(ctx: ApiContext, name: str) -> None:
    """404 once a valid state file no longer holds `name`: it can never become Ready, so a
    waiter must not sit out its whole timeout."""
    snap = await ctx.snapshot()
    if snap.desired is not None and name not in snap.desired.instances:
        raise ApiError(
            404,
            "INSTANCE_NOT_FOUND",
            f"instance {name!r} was deleted while waiting for it to be Ready",
        )


async def _answer(
    ctx: ApiContext, desired: DesiredState, name: str, wait: float | None, status: int = 200
) -> Response:
    spec = desired.instances[name]
    if wait is not None:
        await wait_ready(ctx, spec, wait)
    out = instance_out(spec, ctx.store.get(name), ctx.clock.wall(), ctx.routed_by(name))
    return json_response(out, status)


async def list_instances(request: Request) -> Response:
    ctx = ctx_of(request)
    desired = await ctx.effective()
    names = sorted(set(desired.instances) | {s.name for s in ctx.store.all()})
    now = ctx.clock.wall()
    body = [
        instance_out(desired.instances.get(n), ctx.store.get(n), now, ctx.routed_by(n))
        for n in names
    ]
    return json_response(body)


async def create_instance(request: Request) -> Response:
    ctx = ctx_of(request)
    wait = wait_timeout(request)
    body = await decode_json(request, CreateInstanceRequest, ctx.settings.max_body_bytes)
    name, given = split_body(body)
    assert name is not None  # a required field of this body
    check_name(name)
    fields = state_fields(given)
    snap = await ctx.snapshot()
    if snap.desired is not None:
        if name in snap.desired.instances:
            raise ApiError(409, "INSTANCE_EXISTS", f"instance {name!r} already exists")
        check_capacity(ctx, snap.desired, name, fields)
    try:
        desired = await ctx.write(ctx.statefile.add_instance, name, fields)
    except Exception as exc:
        raise api_error_for(exc, prefix=f"instances.{name}.") from exc
    return await _answer(ctx, desired, name, wait, 201)


async def get_instance(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    spec, status = await ctx.lookup(name)
    if spec is None and status is None:
        raise ApiError(404, "INSTANCE_NOT_FOUND", f"instance {name!r} not found")
    return json_response(instance_out(spec, status, ctx.clock.wall(), ctx.routed_by(name)))


async def apply_instance(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    check_name(name)
    wait = wait_timeout(request)
    body = await decode_json(request, ApplyInstanceRequest, ctx.settings.max_body_bytes)
    named, given = split_body(body)
    if named is not None and named != name:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"body name {named!r} differs from the path's {name!r}",
            [ErrorDetail(field="name", message="must match the name in the path")],
        )
    fields = state_fields(given)
    snap = await ctx.snapshot()
    if snap.desired is not None:
        check_capacity(ctx, snap.desired, name, fields)
    try:
        desired, created = await ctx.write(ctx.statefile.apply_instance, name, fields)
    except Exception as exc:
        raise api_error_for(exc, prefix=f"instances.{name}.") from exc
    return await _answer(ctx, desired, name, wait, 201 if created else 200)


async def delete_instance(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    try:
        await ctx.write(ctx.statefile.remove_instance, name)
    except Exception as exc:
        raise api_error_for(exc) from exc
    return Response(status_code=204)


async def _set_fields(request: Request, fields: dict[str, Any]) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    wait = wait_timeout(request)
    try:
        # The state this write produced: a re-read could already show someone else's save
        # (or a half-written file) and deny a change that was made.
        desired = await ctx.write(ctx.statefile.set_fields, name, fields)
    except Exception as exc:
        raise api_error_for(exc, prefix=f"instances.{name}.") from exc
    return await _answer(ctx, desired, name, wait)


async def start_instance(request: Request) -> Response:
    return await _set_fields(request, {"state": "running"})


async def stop_instance(request: Request) -> Response:
    return await _set_fields(request, {"state": "stopped"})


async def restart_instance(request: Request) -> Response:
    """Bump `restarted_at` (like `kubectl rollout restart`); a stopped instance also starts."""
    now = datetime.fromtimestamp(ctx_of(request).clock.wall(), UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    return await _set_fields(request, {"state": "running", "restarted_at": now})
