"""Every state-file rule, as the user meets it: the text of the error and where it points."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from tei_reconciler.desired.spec import DesiredRun, Dtype, Pooling, spec_hash
from tei_reconciler.desired.statefile import parse_state
from tei_reconciler.errors import Problem, SpecError

OK = '[instances.a]\nmodel_id = "org/model"\n'


def problems(text: str, reserved: frozenset[int] = frozenset()) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        parse_state(text.encode(), "state.toml", reserved_ports=reserved)
    return caught.value.problems


def only(text: str, reserved: frozenset[int] = frozenset()) -> Problem:
    found = problems(text, reserved)
    assert len(found) == 1, found
    return found[0]


def test_a_minimal_instance_gets_the_documented_defaults() -> None:
    state = parse_state(OK.encode())
    spec = state.instances["a"]
    assert spec.name == "a"
    assert spec.state is DesiredRun.RUNNING
    assert spec.gpu == "all"
    assert (spec.max_batch_tokens, spec.max_concurrent_requests) == (16384, 512)
    assert spec.max_client_batch_size == 32
    assert spec.port is None
    assert spec.extra_args == ()


def test_the_revision_is_the_sha256_of_the_file_bytes() -> None:
    assert parse_state(OK.encode()).revision == hashlib.sha256(OK.encode()).hexdigest()


def test_an_empty_file_is_a_valid_state_with_no_instances() -> None:
    assert parse_state(b"").instances == {}


def test_defaults_are_merged_under_every_instance_and_the_instance_wins() -> None:
    state = parse_state(
        b'[defaults]\nmax_batch_tokens = 1024\ngpu = 1\nenv = {A = "1", B = "1"}\n'
        b'[instances.a]\nmodel_id = "o/m"\ngpu = 0\nenv = {B = "2"}\n'
        b'[instances.b]\nmodel_id = "o/m"\n'
    )
    a, b = state.instances["a"], state.instances["b"]
    assert (a.max_batch_tokens, a.gpu, a.env) == (1024, 0, {"A": "1", "B": "2"})
    assert (b.max_batch_tokens, b.gpu, b.env) == (1024, 1, {"A": "1", "B": "1"})


def test_every_field_is_decoded_into_its_type() -> None:
    state = parse_state(
        b'[instances.a]\nmodel_id = "/models/bge"\nrevision = "main"\nstate = "stopped"\n'
        b"gpu = [0, 2]\nport = 8080\nprometheus_port = 9100\nmax_batch_requests = 4\n"
        b'pooling = "last-token"\ndtype = "bfloat16"\nauto_truncate = true\n'
        b'served_model_name = "bge"\ntokenization_workers = 2\n'
        b'extra_args = ["--payload-limit", "9"]\n'
        b"startup_timeout_secs = 60\nhealth_interval_secs = 2.5\nhealth_timeout_secs = 1\n"
        b"failure_threshold = 5\nrestarted_at = 2024-05-01T12:00:00Z\n"
    )
    spec = state.instances["a"]
    assert spec.state is DesiredRun.STOPPED
    assert spec.gpu == (0, 2)
    assert spec.pooling is Pooling.LAST_TOKEN
    assert spec.dtype is Dtype.BFLOAT16
    assert spec.extra_args == ("--payload-limit", "9")
    assert spec.startup_timeout_secs == 60.0
    assert isinstance(spec.startup_timeout_secs, float)
    assert spec.restarted_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert len(spec_hash(spec)) == 16


@pytest.mark.parametrize("name", ["a", "bge-small", "x" * 63, "0abc", "a-1-b"])
def test_dns_1123_labels_are_accepted_as_names(name: str) -> None:
    assert name in parse_state(f'[instances.{name}]\nmodel_id = "o/m"\n'.encode()).instances


@pytest.mark.parametrize("name", ["Bge", "-a", "a-", "a_b", "x" * 64, '"a.b"', '"../etc"'])
def test_names_that_are_not_dns_1123_labels_are_rejected(name: str) -> None:
    problem = only(f'[instances.{name}]\nmodel_id = "o/m"\n')
    assert "must be a DNS-1123 label" in problem.message
    assert problem.line == 1
    assert problem.column > 1


def test_an_instance_without_model_id_is_rejected_at_its_table() -> None:
    problem = only("# c\n[instances.a]\nport = 8080\n")
    assert str(problem) == "state.toml:2:12: instances.a: model_id is required"


@pytest.mark.parametrize("model_id", ["bert-base-uncased", "a/b/c", "../x", "org/..", "rel/../x"])
def test_a_model_id_that_is_neither_org_name_nor_an_absolute_path_is_rejected(
    model_id: str,
) -> None:
    problem = only(f'[instances.a]\nmodel_id = "{model_id}"\n')
    assert problem.field == "instances.a.model_id"
    assert "Hugging Face model id ('org/name') or an absolute path" in problem.message
    assert (problem.line, problem.column) == (2, 1)


@pytest.mark.parametrize("port", ["80", "1023", "65536", "0", '"8080"', "8080.0"])
def test_ports_outside_1024_to_65535_are_rejected(port: str) -> None:
    problem = only(f"{OK}port = {port}\n")
    assert problem.message.startswith("port must be between 1024 and 65535")
    assert (problem.line, problem.column) == (3, 1)


def test_two_instances_with_the_same_port_are_a_port_conflict() -> None:
    problem = only(OK + "port = 8080\n[instances.b]\nmodel_id = 'o/m'\nport = 8080\n")
    assert problem.code == "port_conflict"
    assert str(problem) == (
        "state.toml:6:1: instances.b.port: port 8080 is already used by instances.a.port"
    )


def test_a_prometheus_port_equal_to_another_instances_port_is_a_port_conflict() -> None:
    problem = only(OK + "port = 8080\n[instances.b]\nmodel_id = 'o/m'\nprometheus_port = 8080\n")
    assert problem.code == "port_conflict"
    assert problem.field == "instances.b.prometheus_port"


def test_a_port_from_defaults_shared_by_two_instances_is_reported_once_at_the_default() -> None:
    found = problems("[defaults]\nport = 8080\n" + OK + "[instances.b]\nmodel_id = 'o/m'\n")
    assert [(p.field, p.code, p.line) for p in found] == [("defaults.port", "port_conflict", 2)]


def test_the_managers_own_ports_are_reserved() -> None:
    problem = only(OK + "port = 9000\n", reserved=frozenset({9000, 9001}))
    assert problem.code == "port_conflict"
    assert problem.message == "port 9000 is the manager's own API or gRPC port"


@pytest.mark.parametrize("gpu", ["0", "3", "[0]", "[1, 0]", '"all"', '"none"'])
def test_the_four_gpu_forms_are_accepted(gpu: str) -> None:
    parse_state(f"{OK}gpu = {gpu}\n".encode())


@pytest.mark.parametrize("gpu", ["-1", "[]", "[0, 0]", "[-1]", '"0"', '"some"', "true", "1.0"])
def test_other_gpu_values_are_rejected(gpu: str) -> None:
    problem = only(f"{OK}gpu = {gpu}\n")
    assert problem.message.startswith("gpu must be a GPU index (an integer >= 0)")


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("pooling", '"max"', "cls, mean, splade, last-token"),
        ("dtype", '"int8"', "float16, float32, bfloat16"),
        ("state", '"paused"', "running, stopped"),
    ],
)
def test_enum_fields_accept_only_their_values(field: str, value: str, allowed: str) -> None:
    problem = only(f"{OK}{field} = {value}\n")
    assert problem.message == f"{field} must be one of {allowed}, got {value}"


@pytest.mark.parametrize(
    "field",
    [
        "max_batch_tokens",
        "max_concurrent_requests",
        "max_client_batch_size",
        "max_batch_requests",
        "tokenization_workers",
        "failure_threshold",
    ],
)
def test_count_fields_must_be_positive_integers(field: str) -> None:
    for bad in ("0", "-3", "1.5", '"8"'):
        assert "must be a positive integer" in only(f"{OK}{field} = {bad}\n").message


@pytest.mark.parametrize(
    "field", ["startup_timeout_secs", "health_interval_secs", "health_timeout_secs"]
)
def test_durations_must_be_positive_finite_numbers(field: str) -> None:
    for bad in ("0", "-1", "nan", "inf", '"10s"'):
        assert "must be a positive number of seconds" in only(f"{OK}{field} = {bad}\n").message


@pytest.mark.parametrize(
    "arg", ["--port", "--port=8080", "-p", "--model-id=x", "--json-output", "--hostname"]
)
def test_extra_args_may_not_repeat_a_managed_flag(arg: str) -> None:
    problem = only(f'{OK}extra_args = ["--payload-limit", "9", "{arg}"]\n')
    flag = arg.split("=", maxsplit=1)[0]
    assert problem.message.startswith(f"extra_args may not repeat {flag}: the reconciler")


@pytest.mark.parametrize("arg", ["--api-key", "--api-key=s3cret"])
def test_extra_args_may_not_carry_an_api_key_and_say_what_to_set_instead(arg: str) -> None:
    problem = only(f'{OK}extra_args = ["{arg}", "s3cret"]\n')
    assert problem.field == "instances.a.extra_args"
    assert problem.message == (
        "extra_args may not pass --api-key: a key on the command line shows in the process "
        "list; put it in a file and set api_key_file"
    )


def test_env_may_not_carry_an_api_key_either() -> None:
    problem = only(f'{OK}env = {{ API_KEY = "s3cret" }}\n')
    assert problem.message == (
        "env may not set API_KEY: put the key in a file and set api_key_file"
    )


def test_api_key_file_is_an_absolute_path_and_changes_the_hash_only_when_set() -> None:
    plain = parse_state(OK.encode()).instances["a"]
    keyed = parse_state(f'{OK}api_key_file = "/run/secrets/a-key"\n'.encode()).instances["a"]
    assert keyed.api_key_file == "/run/secrets/a-key"
    assert plain.api_key_file is None
    assert spec_hash(keyed) != spec_hash(plain)
    assert only(f'{OK}api_key_file = "secrets/a-key"\n').message == (
        'api_key_file must be an absolute path, got "secrets/a-key"'
    )


def test_extra_args_must_be_a_list_of_strings() -> None:
    assert "must be a list of strings" in only(f"{OK}extra_args = [1]\n").message


@pytest.mark.parametrize(
    "name", ["CUDA_VISIBLE_DEVICES", "TEI_RECONCILER_OWNER", "TEI_RECONCILER_SPEC_HASH"]
)
def test_env_may_not_set_the_reconcilers_own_variables(name: str) -> None:
    problem = only(f'{OK}env = {{ {name} = "1" }}\n')
    assert problem.message.startswith(f"env may not set {name}")


def test_env_may_set_anything_else_including_teis_generic_names() -> None:
    state = parse_state(f'{OK}env = {{ PORT = "1", HF_TOKEN_PATH = "/t" }}\n'.encode())
    assert state.instances["a"].env == {"PORT": "1", "HF_TOKEN_PATH": "/t"}


def test_env_values_must_be_strings() -> None:
    assert only(f"{OK}env = {{ A = 1 }}\n").message == "env A must be a string, got 1"


def test_restarted_at_must_be_a_toml_datetime() -> None:
    problem = only(f'{OK}restarted_at = "yesterday"\n')
    assert "must be a TOML date-time" in problem.message


def test_booleans_and_strings_are_type_checked() -> None:
    found = problems(f'{OK}auto_truncate = "yes"\nserved_model_name = ""\nrevision = 3\n')
    assert [p.field.rsplit(".", 1)[1] for p in found] == [
        "auto_truncate",
        "served_model_name",
        "revision",
    ]


def test_an_unknown_instance_key_is_an_error_with_a_did_you_mean_hint() -> None:
    problem = only(f"{OK}max_batch_token = 10\n")
    assert problem.code == "unknown_key"
    assert str(problem) == (
        "state.toml:3:1: instances.a.max_batch_token: unknown key 'max_batch_token' "
        "(did you mean 'max_batch_tokens'?)"
    )


def test_an_unknown_top_level_key_is_an_error_with_a_hint() -> None:
    problem = only(f'{OK}[instance.b]\nmodel_id = "o/m"\n')
    assert (problem.code, problem.line, problem.column) == ("unknown_key", 3, 2)
    assert "did you mean 'instances'?" in problem.message


def test_an_unknown_key_in_defaults_is_an_error() -> None:
    problem = only(f"[defaults]\nprot = 1\n{OK}")
    assert (problem.field, problem.code) == ("defaults.prot", "unknown_key")
    assert "did you mean 'port'?" in problem.message


def test_name_inside_an_instance_table_is_explained() -> None:
    problem = only(f'{OK}name = "b"\n')
    assert "the table key is the instance's name" in problem.message


def test_instances_that_are_not_tables_are_rejected() -> None:
    assert only('instances = "x"\n').field == "instances"
    assert only("[instances]\na = 1\n").message == "instances.a must be a table"


def test_every_problem_in_a_file_is_reported_at_once_in_file_order() -> None:
    found = problems(
        '[instances.a]\nmodel_id = "x"\nport = 1\n\n[instances.B]\nmodel_id = "o/m"\ngpu = -1\n'
    )
    assert [(p.line, p.field) for p in found] == [
        (2, "instances.a.model_id"),
        (3, "instances.a.port"),
        (5, "instances.B"),
        (7, "instances.B.gpu"),
    ]


def test_a_syntax_error_names_its_line_and_column() -> None:
    problem = only('[instances.a]\nmodel_id = "o/m"\nport = = 3\n')
    assert (problem.line, problem.code) == (3, "syntax")
    assert problem.message.startswith("invalid TOML")


def test_a_file_that_is_not_utf8_is_a_syntax_error_at_the_bad_byte() -> None:
    with pytest.raises(SpecError) as caught:
        parse_state(b'# ok\n# \xff\n[instances.a]\nmodel_id = "o/m"\n', "s.toml")
    assert str(caught.value) == "s.toml:2:3: syntax: the file is not UTF-8 text"


def test_problems_inside_multiline_values_point_at_their_key() -> None:
    text = f'{OK}extra_args = [\n  "--a",\n  """x\n[instances.z]""",\n]\nprt = 3\n'
    problem = only(text)
    assert (problem.field, problem.line) == ("instances.a.prt", 8)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('env = { A = "x\\u0000y" }', "env"),
        ('extra_args = ["--payload-limit", "9\\u0000"]', "extra_args"),
        ('revision = "main\\u0000"', "revision"),
        ('served_model_name = "m\\u0000"', "served_model_name"),
    ],
)
def test_a_nul_character_no_process_argument_can_hold_is_rejected(line: str, field: str) -> None:
    problem = only(f"{OK}{line}\n")
    assert problem.field == f"instances.a.{field}"
    assert "NUL" in problem.message


def test_an_integer_beyond_64_bits_is_rejected_like_any_toml_overflow() -> None:
    problem = only(f"{OK}max_batch_tokens = 99999999999999999999\n")
    assert problem.field == "instances.a.max_batch_tokens"
    assert "must be a positive integer" in problem.message
