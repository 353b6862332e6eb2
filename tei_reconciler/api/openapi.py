"""The OpenAPI 3.1 document, generated from the same msgspec Structs the handlers use.

Each operation is declared once in `OPERATIONS` (path, method, parameters, body, answers) and
the schemas come from `msgspec.json.schema_components`, so a field added to a Struct appears
in the document with no second edit. Every operation lists every status it can answer with,
the error envelope included; the fuzz test holds the handlers to that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec

from tei_reconciler import __version__
from tei_reconciler.api.schemas import (
    ApplyInstanceRequest,
    CreateInstanceRequest,
    DeclareModelRequest,
    ErrorResponse,
    EventOut,
    HealthResponse,
    InstanceOut,
    LogsResponse,
    ModelOut,
    PlanResponse,
    ReadyResponse,
    StateWriteResponse,
)
from tei_reconciler.desired.spec import NAME_MAX, NAME_PATTERN
from tei_reconciler.traffic import TrafficSnapshot

REF = "#/components/schemas/{name}"
TOML = "application/toml"


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    ok: dict[int, object]  # status -> Struct/type, "toml", "text", "sse+<type>" or None (empty)
    errors: tuple[int, ...] = ()
    body: object = None  # request Struct, or "toml"
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (name, schema, description)
    headers: tuple[tuple[str, str], ...] = ()  # request headers: (name, description)
    tags: tuple[str, ...] = field(default=("instances",))


WAIT = (
    ("wait", {"type": "string", "enum": ["ready"]}, "block until the instance is Ready"),
    (
        "timeout",
        {"type": "number", "minimum": 0, "maximum": 3600},
        "seconds to wait (default 300); 504 TIMEOUT after, 404 if it is deleted meanwhile",
    ),
)
BODY_ERRORS = (400, 413, 415)
ONE = "/instances/{name}"
MODEL = "/models/{model_id}"  # the id percent-encoded as one segment (BAAI%2Fbge-small)

OPERATIONS: tuple[Op, ...] = (
    Op("get", "/health", "Liveness", {200: HealthResponse}, tags=("system",)),
    Op(
        "get",
        "/ready",
        "Readiness: the controller finished a pass and a valid state is in force (a later "
        "invalid file is a warning, not a 503)",
        {200: ReadyResponse},
        (503,),
        tags=("system",),
    ),
    Op("get", "/metrics", "Prometheus metrics", {200: "text"}, tags=("system",)),
    Op("get", "/openapi.json", "This document", {200: dict}, tags=("system",)),
    Op("get", "/instances", "List instances", {200: list[InstanceOut]}),
    Op(
        "post",
        "/instances",
        "Create an instance (adds it to the state file)",
        {201: InstanceOut},
        (*BODY_ERRORS, 404, 409, 422, 503, 504),
        body=CreateInstanceRequest,
        query=WAIT,
    ),
    Op("get", ONE, "Get one instance", {200: InstanceOut}, (404,)),
    Op(
        "put",
        ONE,
        "Create or replace an instance (apply)",
        {200: InstanceOut, 201: InstanceOut},
        (*BODY_ERRORS, 404, 409, 422, 503, 504),
        body=ApplyInstanceRequest,
        query=WAIT,
    ),
    Op("delete", ONE, "Delete an instance", {204: None}, (404, 409, 503)),
    *(
        Op(
            "post",
            f"{ONE}/{verb}",
            f"{verb.capitalize()} an instance (edits its desired state; idempotent)",
            {200: InstanceOut},
            (400, 404, 409, 503, 504),
            query=WAIT,
        )
        for verb in ("start", "stop", "restart")
    ),
    Op(
        "get",
        f"{ONE}/logs",
        "Log lines [start:end) with Python slice semantics; follow=true streams (SSE)",
        {200: LogsResponse},
        (400, 404),
        query=(
            ("start", {"type": "integer"}, "first line (negative: from the end)"),
            ("end", {"type": "integer"}, "line after the last (negative: from the end)"),
            ("follow", {"type": "boolean"}, "stream new lines as Server-Sent Events"),
        ),
    ),
    Op(
        "get",
        f"{ONE}/events",
        "Events of an instance; Accept: text/event-stream watches its status",
        {200: list[EventOut]},
        (404,),
    ),
    Op(
        "get",
        f"{ONE}/metrics",
        "The instance's own Prometheus metrics (TEI's), scraped through the API",
        {200: "text"},
        (404, 502, 503),
    ),
    Op(
        "get",
        f"{ONE}/traffic",
        "The instance's router traffic over the last minutes, a point per step; "
        "Accept: text/event-stream sends a new snapshot as each step ends",
        {200: TrafficSnapshot},
        (404,),
        tags=("traffic",),
    ),
    Op(
        "get",
        "/traffic",
        "Router traffic of every instance over the last minute; "
        "Accept: text/event-stream sends a new snapshot as each step ends",
        {200: TrafficSnapshot},
        tags=("traffic",),
    ),
    Op(
        "get",
        "/events",
        "All events; Accept: text/event-stream watches every change: `status` and `deleted` "
        "(an instance), `model` and `model_deleted` (a model, download progress included)",
        {200: list[EventOut]},
        tags=("events",),
    ),
    Op(
        "get",
        "/state",
        "The state file (TOML), with its revision as ETag",
        {200: "toml"},
        (503,),
        tags=("state",),
    ),
    Op(
        "put",
        "/state",
        "Replace the state file; dry_run=true only validates and plans",
        {200: StateWriteResponse},
        (*BODY_ERRORS, 409, 412, 503),
        body="toml",
        query=(("dry_run", {"type": "boolean"}, "validate and plan, write nothing"),),
        headers=(("If-Match", "the revision (ETag) the new file is based on"),),
        tags=("state",),
    ),
    Op("get", "/plan", "What the controller is about to do", {200: PlanResponse}, tags=("state",)),
    Op(
        "get",
        "/models",
        "Every model the state file declares, an instance uses, or the cache holds",
        {200: list[ModelOut]},
        tags=("models",),
    ),
    Op(
        "post",
        "/models",
        'Declare a model (adds a [models."<id>"] table to the state file); 200 if it was',
        {201: ModelOut, 200: ModelOut},
        (*BODY_ERRORS, 409),
        body=DeclareModelRequest,
        tags=("models",),
    ),
    Op(
        "get",
        MODEL,
        "One model: status, revision, cache path and size, users, metadata",
        {200: ModelOut},
        (404,),
        tags=("models",),
    ),
    Op(
        "delete",
        MODEL,
        "Undeclare a model; evict=true also removes it from the cache (409 while in use)",
        {204: None},
        (400, 404, 409, 503),
        query=(("evict", {"type": "boolean"}, "remove the model's files from the cache"),),
        tags=("models",),
    ),
    Op(
        "post",
        f"{MODEL}/download",
        "Fetch the model now (202); wait=true answers once it is on disk",
        {202: ModelOut, 200: ModelOut},
        (400, 404, 500, 503, 504),
        query=(
            ("wait", {"type": "boolean"}, "block until the model is on disk (or failed)"),
            ("timeout", {"type": "number", "minimum": 0}, "seconds to wait (default 3600)"),
            ("revision", {"type": "string"}, "branch, tag or commit (default: the wanted one)"),
        ),
        tags=("models",),
    ),
    Op(
        "get",
        f"{MODEL}/events",
        "Events of a model; Accept: text/event-stream watches its status and progress",
        {200: list[EventOut]},
        (404,),
        tags=("models",),
    ),
)

_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    202: "Accepted (it goes on in the background)",
    204: "No Content",
    400: "Validation error (VALIDATION_ERROR, with details)",
    404: "Not found (INSTANCE_NOT_FOUND, MODEL_NOT_FOUND)",
    405: "Method not allowed",
    409: "Conflict (INSTANCE_EXISTS, PORT_CONFLICT, STATE_READ_ONLY, MODEL_IN_USE)",
    412: "Stale If-Match (REVISION_MISMATCH)",
    413: "Body too large (PAYLOAD_TOO_LARGE)",
    415: "Wrong Content-Type",
    422: "No capacity (MAX_INSTANCES_REACHED, PORT_ALLOCATION_FAILED)",
    500: "Internal error (INTERNAL_ERROR); a model could not be fetched (MODEL_DOWNLOAD_FAILED)",
    502: "The instance did not answer (INSTANCE_METRICS_UNAVAILABLE)",
    503: "Not ready (NOT_READY, INSTANCE_NOT_RUNNING, MODELS_UNAVAILABLE) or the state file "
    "cannot be used (STATE_FILE_UNAVAILABLE: a directory in its place, larger than "
    "max_state_bytes, ...)",
    504: "Written, but not Ready (or not downloaded) in time (TIMEOUT)",
}


def _content(kind: object, schemas: dict[object, dict[str, Any]]) -> dict[str, Any] | None:
    if kind is None:
        return None
    if kind == "toml":
        return {TOML: {"schema": {"type": "string"}}}
    if kind == "text":
        return {"text/plain": {"schema": {"type": "string"}}}
    return {"application/json": {"schema": schemas[kind]}}


def _operation(op: Op, schemas: dict[object, dict[str, Any]]) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", op.path):
        schema: dict[str, object] = {"type": "string"}
        if name == "name":
            schema = {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    params += [
        {"name": n, "in": "query", "required": False, "schema": s, "description": d}
        for n, s, d in op.query
    ]
    params += [
        {
            "name": n,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": d,
        }
        for n, d in op.headers
    ]
    responses: dict[str, Any] = {}
    for status, kind in op.ok.items():
        answer: dict[str, Any] = {"description": _DESCRIPTIONS[status]}
        content = _content(kind, schemas)
        if content is not None:
            answer["content"] = content
        if kind == "toml":
            answer["headers"] = {"ETag": {"schema": {"type": "string"}}}
        responses[str(status)] = answer
    for status in (*op.errors, 405, 500):
        responses[str(status)] = {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorResponse")}}},
        }
    operation: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.method + "_" + re.sub(r"[^a-z]+", "_", op.path).strip("_"),
        "tags": list(op.tags),
        "responses": responses,
    }
    if params:
        operation["parameters"] = params
    if op.body is not None:
        operation["requestBody"] = {"required": True, "content": _content(op.body, schemas)}
    return operation


@cache
def openapi_document() -> dict[str, Any]:
    kinds: list[object] = [ErrorResponse]
    for op in OPERATIONS:
        for kind in (*op.ok.values(), op.body):
            if kind is not None and not isinstance(kind, str) and kind not in kinds:
                kinds.append(kind)
    refs, components = msgspec.json.schema_components(kinds, ref_template=REF)
    schemas = dict(zip(kinds, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tei-reconciler",
            "version": __version__,
            "description": "Desired state and status of TEI instances (tei-manager compatible).",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
