"""Property-based fuzzing from `/openapi.json`: no 5xx, and every answer fits the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tei_reconciler.api.openapi import OPERATIONS, Op
from tei_reconciler.desired.spec import InstanceSpec

from .harness import build, observed

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schemathesis.serializer("application/toml")
def _toml(ctx: object, value: object) -> bytes:
    return value.encode() if isinstance(value, str) else repr(value).encode()


def fuzzed_schema(tmp_path: Path) -> schemathesis.BaseSchema:
    app, api = build(tmp_path)
    api.statefile.path.write_text('[instances.a]\nmodel_id = "m/x"\nport = 8081\n')
    (api.runtime / "logs" / "a.log").write_bytes(b"one\ntwo\n\xff three\n")
    api.store.put(observed(InstanceSpec(name="a", model_id="m/x", port=8081)))
    api.store.first_pass_done = True
    api.store.observed_revision = api.statefile.read()[1]
    api.store.record_event("a", "Normal", "Started", "process 4242 started", 1_700_000_000.0)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


#: Where the document's valid data must sometimes be accepted: the names and model ids it
#: generates follow the patterns it declares.
WRITES_A_NEW_INSTANCE = {("post", "/instances"), ("put", "/instances/{name}")}

#: Every operation with valid data; those with something to get wrong, with invalid data too.
CASES = [
    pytest.param(op, mode, id=f"{op.method.upper()} {op.path} {mode.value}")
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or op.query or op.body or op.headers
]


@pytest.mark.parametrize(("op", "mode"), CASES)
def test_no_request_gets_a_5xx_or_an_answer_the_document_does_not_allow(
    tmp_path: Path, op: Op, mode: GenerationMode
) -> None:
    schema = fuzzed_schema(tmp_path)
    strategy = schema[op.path][op.method].as_strategy(generation_mode=mode)
    # A TOML body is bytes on the wire: an "integer body" is just text, rejected (or not) by
    # what it says, not by its JSON type.
    checks = [c for c in CHECKS if op.body != "toml" or c is not negative_data_rejection]

    @given(case=strategy)
    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        if isinstance(case.query, dict):
            case.query.pop("wait", None)  # would block until a controller makes it Ready
            case.query.pop("follow", None)  # an endless stream
        response = case.call_and_validate(checks=checks)
        statuses.append(response.status_code)

    statuses: list[int] = []
    run()
    if mode is GenerationMode.POSITIVE and (op.method, op.path) in WRITES_A_NEW_INSTANCE:
        # "Valid data" must really be valid often enough to reach the handler's success path.
        assert {200, 201} & set(statuses), f"no generated request was accepted: {statuses}"
