"""The field table is the one list of instance fields: everything that lists fields follows it,
and the spec hash of an instance stays what it was when a field is added."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from tei_reconciler.api.openapi import openapi_document
from tei_reconciler.desired.fields import FIELDS, INSTANCE_KEYS, LAUNCH_FLAGS, MANAGED_FLAGS
from tei_reconciler.desired.spec import Dtype, InstanceSpec, Pooling, Rollout, spec_hash
from tei_reconciler.desired.tomledit import plain
from tei_reconciler.drivers.command import build_argv
from tei_reconciler.engine.args import build_parser, parse_args

#: Every field set away from its default.
FULL = InstanceSpec(
    name="bge",
    model_id="BAAI/bge-small-en-v1.5",
    revision="main",
    gpu=(0, 1),
    port=8081,
    prometheus_port=9101,
    max_batch_tokens=8192,
    max_concurrent_requests=256,
    max_client_batch_size=16,
    max_batch_requests=4,
    pooling=Pooling.MEAN,
    dtype=Dtype.FLOAT16,
    auto_truncate=False,
    served_model_name="bge",
    tokenization_workers=2,
    extra_args=("--payload-limit", "100"),
    env={"A": "1"},
    startup_timeout_secs=5.0,
    health_interval_secs=1.5,
    health_timeout_secs=1.0,
    failure_threshold=2,
    restarted_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    rollout=Rollout.RECREATE,
    progress_deadline_secs=120.0,
)
MINIMAL = InstanceSpec(name="minilm", model_id="sentence-transformers/all-MiniLM-L6-v2")
ARGV = build_argv([], FULL, host="127.0.0.1", port=8081, prom=9101)


def test_every_instance_spec_field_has_exactly_one_entry_in_the_field_table() -> None:
    assert set(FIELDS) == set(InstanceSpec.__struct_fields__)


def test_every_field_with_a_tei_flag_reaches_the_command_line_with_its_value() -> None:
    for name, field in FIELDS.items():
        if field.flag is None:
            continue
        at = ARGV.index(field.flag)
        assert ARGV[at + 1] == field.render(getattr(FULL, name)), name


def test_a_field_left_unset_passes_no_flag_and_the_users_flags_come_last() -> None:
    argv = build_argv(["tei"], MINIMAL, host="::1", port=8080, prom=9100)
    assert "--revision" not in argv
    assert "--pooling" not in argv
    assert argv[-1] == "--json-output"
    assert ARGV[-3:] == ["--json-output", "--payload-limit", "100"]


def test_the_built_in_engine_accepts_every_command_line_the_reconciler_builds() -> None:
    args = parse_args(ARGV)
    assert (args.model_id, args.port, args.prometheus_port) == (FULL.model_id, 8081, 9101)
    assert (args.pooling, args.dtype, args.auto_truncate) == ("mean", "float16", False)
    assert args.payload_limit == 100


def test_extra_args_may_repeat_no_flag_the_command_line_already_has() -> None:
    ours = {arg for arg in ARGV[: -len(FULL.extra_args)] if arg.startswith("-")}
    aliases = {alias for field in FIELDS.values() for alias in field.aliases}
    assert ours == set(MANAGED_FLAGS) - aliases


def test_every_flag_the_reconciler_manages_is_one_the_engine_knows() -> None:
    known = build_parser()._option_string_actions
    assert set(MANAGED_FLAGS) <= set(known)
    assert set(LAUNCH_FLAGS) <= set(MANAGED_FLAGS)


def test_the_state_file_and_the_rest_body_take_the_fields_of_the_table() -> None:
    assert set(INSTANCE_KEYS) == set(FIELDS) - {"name"}
    schemas = openapi_document()["components"]["schemas"]
    settable = {name for name, field in FIELDS.items() if field.rest}
    assert set(schemas["CreateInstanceRequest"]["properties"]) == settable | {"gpu_id"}
    assert schemas["CreateInstanceRequest"]["required"] == ["model_id", "name"]
    assert set(schemas["ApplyInstanceRequest"]["properties"]) == settable | {"gpu_id"}


def test_the_spec_hash_of_an_instance_is_what_it_always_was() -> None:
    assert spec_hash(FULL) == "a16cd871e3d85301"
    assert spec_hash(MINIMAL) == "3936dc19ede50b8d"


def test_how_a_change_rolls_out_is_no_change_of_the_process() -> None:
    for spec in (FULL, MINIMAL):
        for rollout in Rollout:
            for deadline in (None, 5.0):
                again = msgspec.structs.replace(
                    spec, rollout=rollout, progress_deadline_secs=deadline
                )
                assert spec_hash(again) == spec_hash(spec)


class Later(InstanceSpec, frozen=True):
    """InstanceSpec with a field added in some later release."""

    warmup_requests: int = 0


def test_adding_a_defaulted_field_keeps_every_existing_hash() -> None:
    for spec in (FULL, MINIMAL):
        upgraded = Later(**msgspec.structs.asdict(spec))
        assert spec_hash(upgraded) == spec_hash(spec)
        changed = msgspec.structs.replace(upgraded, warmup_requests=3)
        assert spec_hash(changed) != spec_hash(spec)


def test_date_time_text_from_json_is_written_to_toml_as_a_date_time() -> None:
    assert plain("restarted_at", "2024-05-01T12:00:00+00:00") == FULL.restarted_at
    assert plain("revision", "2024-05-01T12:00:00+00:00") == "2024-05-01T12:00:00+00:00"
