"""Manager settings: precedence flag > env > config file > default, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.errors import Problem, SpecError
from tei_reconciler.settings import RULES, AuthSettings, Settings, load_settings


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def errors(cli: dict[str, object], env: dict[str, str], path: Path | None = None) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        load_settings(cli, env, path)
    return caught.value.problems


def test_every_setting_can_be_set_and_is_checked() -> None:
    assert set(RULES) == set(Settings.__struct_fields__) - {"auth"}
    for key in RULES:  # each one read from the environment, as its type says
        value = getattr(Settings(), key)
        if value is None:
            continue
        text = "-".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert (
            getattr(load_settings({}, {f"TEI_RECONCILER_{key.upper()}": text}, None), key) == value
        )


def test_without_any_source_every_key_has_its_documented_default() -> None:
    s = load_settings({}, {}, None)
    assert (s.api_host, s.api_port, s.grpc_host, s.grpc_port) == (
        "127.0.0.1",
        9000,
        "127.0.0.1",
        9001,
    )
    assert (s.state_file, s.runtime_dir, s.tei_binary, s.tei_protocol) == (
        "./tei-state.toml",
        "./tei-runtime",
        "auto",
        "grpc",
    )
    assert (s.instance_port_range, s.prometheus_port_range) == ((8080, 8180), (9100, 9200))
    assert (s.max_instances, s.resync_interval_secs, s.on_shutdown) == (32, 30.0, "stop")
    assert (s.health_interval_secs, s.health_timeout_secs, s.failure_threshold) == (10, 5, 3)
    assert (s.startup_timeout_secs, s.stop_grace_secs) == (600, 30)
    assert (s.backoff_initial_secs, s.backoff_max_secs, s.backoff_reset_secs) == (10, 300, 600)
    assert (s.log_max_bytes, s.log_backups) == (10 * 1024 * 1024, 5)
    assert (s.request_timeout_secs, s.max_message_mb, s.idle_channel_secs) == (30, 40, 600)
    assert (s.default_instance, s.max_body_bytes, s.max_concurrent_starts) == (None, 1 << 20, 4)
    assert s.auth == AuthSettings()
    assert s.auth.exempt_paths == ("/health", "/ready", "/metrics")
    assert s.reserved_ports == frozenset({9000, 9001})


def test_a_flag_beats_env_which_beats_the_config_file_which_beats_the_default(
    tmp_path: Path,
) -> None:
    path = config(tmp_path, "api_port = 7000\ngrpc_port = 7001\nmax_instances = 5\n")
    env = {"TEI_RECONCILER_API_PORT": "7100", "TEI_RECONCILER_GRPC_PORT": "7101"}
    s = load_settings({"api_port": 7200, "grpc_port": None}, env, path)
    assert (s.api_port, s.grpc_port, s.max_instances, s.log_backups) == (7200, 7101, 5, 5)


def test_env_values_are_decoded_by_the_keys_type() -> None:
    env = {
        "TEI_RECONCILER_HEALTH_INTERVAL_SECS": "2.5",
        "TEI_RECONCILER_INSTANCE_PORT_RANGE": "8000-8010",
        "TEI_RECONCILER_PROMETHEUS_PORT_RANGE": "9300,9310",
        "TEI_RECONCILER_ON_SHUTDOWN": "keep",
        "TEI_RECONCILER_DEFAULT_INSTANCE": "bge",
        "TEI_RECONCILER_OWNER": "not a setting: ignored",
    }
    s = load_settings({}, env, None)
    assert s.health_interval_secs == 2.5
    assert (s.instance_port_range, s.prometheus_port_range) == ((8000, 8010), (9300, 9310))
    assert (s.on_shutdown, s.default_instance) == ("keep", "bge")


def test_string_flag_values_are_decoded_like_env_values() -> None:
    s = load_settings({"api_port": "0", "grpc_port": "0", "state_file": "/s.toml"}, {}, None)
    assert (s.api_port, s.grpc_port, s.state_file) == (0, 0, "/s.toml")
    assert s.reserved_ports == frozenset()


def test_the_config_file_holds_flat_keys_and_auth_tables(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        'on_shutdown = "keep"\n[auth]\nproviders = ["mtls", "token"]\n'
        '[auth.mtls]\nca_cert = "/ca.pem"\nserver_cert = "/s.pem"\nserver_key = "/k.pem"\n'
        'allowed_subjects = ["ops"]\ntrusted_proxies = ["10.0.0.0/8"]\n'
        '[auth.token]\ntokens_file = "/tokens"\n',
    )
    s = load_settings({}, {}, path)
    assert s.on_shutdown == "keep"
    assert s.auth.providers == ("mtls", "token")
    assert s.auth.mtls.allowed_subjects == ("ops",)
    assert s.auth.mtls.trusted_proxies == ("10.0.0.0/8",)
    assert s.auth.token.tokens_file == "/tokens"


def test_an_unknown_config_key_is_located_and_gets_a_hint(tmp_path: Path) -> None:
    path = config(tmp_path, "api_port = 9000\ngrpc_prot = 9002\n")
    (problem,) = errors({}, {}, path)
    assert str(problem) == (
        f"{path}:2:1: grpc_prot: unknown key 'grpc_prot' (did you mean 'grpc_port'?)"
    )
    assert problem.code == "unknown_key"


def test_every_bad_value_is_reported_at_once_with_its_source(tmp_path: Path) -> None:
    path = config(tmp_path, 'health_interval_secs = -1\non_shutdown = "pause"\n')
    found = errors({"max_instances": 0}, {"TEI_RECONCILER_LOG_BACKUPS": "many"}, path)
    by_field = {p.field: p for p in found}
    assert set(by_field) == {"health_interval_secs", "on_shutdown", "max_instances", "log_backups"}
    assert (by_field["health_interval_secs"].line, by_field["on_shutdown"].line) == (1, 2)
    assert by_field["max_instances"].message.endswith("(from --max-instances)")
    assert by_field["log_backups"].message == (
        "log_backups cannot be read from 'many' (from TEI_RECONCILER_LOG_BACKUPS)"
    )


def test_the_api_and_grpc_ports_must_differ() -> None:
    (problem,) = errors({"grpc_port": 9000}, {})
    assert problem.code == "port_conflict"
    assert problem.message == "api_port and grpc_port are both 9000 (from --grpc-port)"


@pytest.mark.parametrize("value", ["8180-8080", "8080-8080", "80-90", "8080-70000", "8080"])
def test_a_port_range_must_be_a_non_empty_half_open_range_of_valid_ports(value: str) -> None:
    (problem,) = errors({}, {"TEI_RECONCILER_INSTANCE_PORT_RANGE": value})
    assert problem.field == "instance_port_range"


def test_overlapping_port_ranges_are_rejected() -> None:
    (problem,) = errors({"prometheus_port_range": (8100, 8200)}, {})
    assert problem.message.startswith("instance_port_range and prometheus_port_range overlap")


def test_the_managers_ports_may_not_lie_in_the_instance_port_range() -> None:
    (problem,) = errors({"api_port": 8090}, {})
    assert problem.message.startswith("api_port 8090 lies in instance_port_range [8080, 8180)")


def test_backoff_initial_may_not_exceed_backoff_max() -> None:
    (problem,) = errors({"backoff_initial_secs": 400.0}, {})
    assert problem.field == "backoff_initial_secs"


def test_the_mtls_provider_needs_its_certificates(tmp_path: Path) -> None:
    path = config(tmp_path, '[auth]\nproviders = ["mtls"]\n[auth.mtls]\nca_cert = "/ca"\n')
    assert {p.field for p in errors({}, {}, path)} == {
        "auth.mtls.server_cert",
        "auth.mtls.server_key",
    }


def test_the_token_provider_needs_tokens(tmp_path: Path) -> None:
    path = config(tmp_path, '[auth]\nproviders = ["token"]\n')
    (problem,) = errors({}, {}, path)
    assert problem.field == "auth.token"


def test_auth_values_are_checked(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[auth]\nproviders = ["ldap"]\nexempt_paths = ["health"]\n'
        '[auth.mtls]\ntrusted_proxies = ["10.0.0.0/33"]\nallowed_sanz = []\n',
    )
    found = {p.field: p for p in errors({}, {}, path)}
    assert set(found) == {
        "auth.providers",
        "auth.exempt_paths",
        "auth.mtls.trusted_proxies",
        "auth.mtls.allowed_sanz",
    }
    assert found["auth.mtls.allowed_sanz"].code == "unknown_key"
    assert found["auth.mtls.trusted_proxies"].line == 5


def test_a_missing_or_broken_config_file_is_a_spec_error(tmp_path: Path) -> None:
    (problem,) = errors({}, {}, tmp_path / "nope.toml")
    assert "cannot read the config file" in problem.message
    (problem,) = errors({}, {}, config(tmp_path, "api_port = \n"))
    assert problem.message.startswith("invalid TOML")


def test_default_instance_must_be_an_instance_name() -> None:
    (problem,) = errors({"default_instance": "Not A Name"}, {})
    assert problem.field == "default_instance"


def test_settings_are_frozen_structs() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.api_port = 1  # type: ignore[misc]
