"""Manager settings: how this reconciler runs, as opposed to what it runs (the state file).

Settings come from four layers, highest first: command-line flags, environment variables
`TEI_RECONCILER_<KEY>`, the `--config` TOML file (flat keys plus `[auth]` tables), defaults.
They are validated once, here, with the same problem quality as the state file (file, line,
column, field, "did you mean"), and the rest of the program reads a frozen `Settings`.

Relative paths (`state_file`, `runtime_dir`) are relative to the working directory; the
runtime directory holds logs, the status file and locks and defaults to `./tei-runtime`.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from tei_reconciler._types import PortRange
from tei_reconciler.desired.check import suggest
from tei_reconciler.desired.spec import is_instance_name
from tei_reconciler.desired.statefile import DEFAULT_MAX_BYTES
from tei_reconciler.desired.tomlpositions import scan
from tei_reconciler.errors import Problem, SpecError

ENV_PREFIX = "TEI_RECONCILER_"
Provider = Literal["mtls", "token"]


class _Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Immutable and strict, like the desired-state Structs."""


class MtlsSettings(_Base, frozen=True):
    ca_cert: str | None = None  # CA that signs client certificates (PEM)
    server_cert: str | None = None
    server_key: str | None = None
    allowed_subjects: tuple[str, ...] = ()  # exact client CNs; empty: any CA-signed client
    allowed_sans: tuple[str, ...] = ()  # e.g. "DNS:client.example.com"
    trusted_proxies: tuple[str, ...] = ()  # CIDRs allowed to send X-SSL-Client-Cert
    rest_tls: bool = True  # false: REST speaks plain HTTP behind a TLS-terminating proxy


class TokenSettings(_Base, frozen=True):
    tokens: tuple[str, ...] = ()
    tokens_file: str | None = None  # one token per line; read by the auth provider


class AuthSettings(_Base, frozen=True):
    providers: tuple[Provider, ...] = ()  # none: no authentication
    mtls: MtlsSettings = msgspec.field(default_factory=MtlsSettings)
    token: TokenSettings = msgspec.field(default_factory=TokenSettings)
    # The kubelet's probes and Prometheus carry no credentials; the probes say nothing secret.
    exempt_paths: tuple[str, ...] = ("/health", "/ready", "/metrics")
    exempt_grpc_services: tuple[str, ...] = ("grpc.health.v1.Health",)  # no per-call check


class Settings(_Base, frozen=True):
    api_host: str = "127.0.0.1"
    api_port: int = 9000  # 0: any free port (tests)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 9001
    state_file: str = "./tei-state.toml"
    runtime_dir: str = "./tei-runtime"
    tei_binary: str = "auto"  # "auto" (PATH, else built-in) | "builtin" | a path
    tei_protocol: Literal["grpc", "http"] = "grpc"
    instance_host: str = "127.0.0.1"
    instance_port_range: tuple[int, int] = (8080, 8180)  # a PortRange: [start, end)
    prometheus_port_range: tuple[int, int] = (9100, 9200)
    max_instances: int = 32
    resync_interval_secs: float = 30.0
    health_interval_secs: float = 10.0
    health_timeout_secs: float = 5.0
    failure_threshold: int = 3
    startup_timeout_secs: float = 600.0
    backoff_initial_secs: float = 10.0
    backoff_max_secs: float = 300.0
    backoff_reset_secs: float = 600.0
    stop_grace_secs: float = 30.0
    on_shutdown: Literal["stop", "keep"] = "stop"
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    request_timeout_secs: float = 30.0
    max_message_mb: int = 40
    idle_channel_secs: float = 600.0
    default_instance: str | None = None
    data_plane: Literal["auto", "envoy", "grpcio"] = "auto"  # who carries gRPC traffic
    envoy_binary: str = "auto"  # "auto" (the `envoy` extra, then PATH) | a path
    max_body_bytes: int = 1024 * 1024  # REST request body limit
    max_state_bytes: int = DEFAULT_MAX_BYTES  # a larger state file is refused unread
    max_concurrent_starts: int = 4
    # Models (the Hugging Face cache, shared with the TEI children). None: from the
    # environment as huggingface_hub reads it (HF_HUB_CACHE, HF_HOME, HF_ENDPOINT,
    # HF_HUB_OFFLINE), else its defaults.
    huggingface_hub_cache: str | None = None
    hf_endpoint: str | None = None
    hf_token_file: str | None = None  # the Hub token, read at each fetch, never logged
    hf_offline: bool | None = None  # true: never contact the Hub; use the cache as it is
    max_concurrent_downloads: int = 2
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)

    @property
    def reserved_ports(self) -> frozenset[int]:
        """The manager's own ports, which no instance may use."""
        return frozenset({self.api_port, self.grpc_port} - {0})


class _Invalid(Exception):
    pass


def _int(low: int, high: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= low
            and (high is None or value <= high)
        ):
            return value
        limit = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _Invalid(f"must be an integer {limit}, got {value!r}")

    return check


def _secs(*, allow_zero: bool = False) -> Callable[[object], float]:
    def check(value: object) -> float:
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > 0 or (allow_zero and value == 0))
        ):
            return float(value)
        raise _Invalid(f"must be a {'' if allow_zero else 'positive '}number, got {value!r}")

    return check


def _text(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise _Invalid(f"must be a non-empty string, got {value!r}")


def _one_of(*choices: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value in choices:
            return str(value)
        raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def _range(value: object) -> tuple[int, int]:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1024 <= value[0] < value[1] <= 65536
    ):
        return (value[0], value[1])
    raise _Invalid(f"must be [start, end) with 1024 <= start < end <= 65536, got {value!r}")


def _url(value: object) -> str:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value.rstrip("/")
    raise _Invalid(f"must be an http:// or https:// URL, got {value!r}")


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise _Invalid(f"must be true or false, got {value!r}")


def _instance(value: object) -> str | None:
    if value is None or (isinstance(value, str) and is_instance_name(value)):
        return value
    raise _Invalid(f"must be an instance name, got {value!r}")


_PORT = _int(0, 65535)
#: The rule of each flat setting: one per `Settings` field but `auth` (a test holds them to it).
RULES: dict[str, Callable[[object], object]] = {
    "api_host": _text,
    "api_port": _PORT,
    "grpc_host": _text,
    "grpc_port": _PORT,
    "state_file": _text,
    "runtime_dir": _text,
    "tei_binary": _text,
    "tei_protocol": _one_of("grpc", "http"),
    "instance_host": _text,
    "instance_port_range": _range,
    "prometheus_port_range": _range,
    "max_instances": _int(1),
    "resync_interval_secs": _secs(),
    "health_interval_secs": _secs(),
    "health_timeout_secs": _secs(),
    "failure_threshold": _int(1),
    "startup_timeout_secs": _secs(),
    "backoff_initial_secs": _secs(),
    "backoff_max_secs": _secs(),
    "backoff_reset_secs": _secs(),
    "stop_grace_secs": _secs(allow_zero=True),
    "on_shutdown": _one_of("stop", "keep"),
    "log_max_bytes": _int(1),
    "log_backups": _int(0),
    "request_timeout_secs": _secs(),
    "max_message_mb": _int(1),
    "idle_channel_secs": _secs(),
    "default_instance": _instance,
    "data_plane": _one_of("auto", "envoy", "grpcio"),
    "envoy_binary": _text,
    "max_body_bytes": _int(1),
    "max_state_bytes": _int(1),
    "max_concurrent_starts": _int(1),
    "huggingface_hub_cache": _text,
    "hf_endpoint": _url,
    "hf_token_file": _text,
    "hf_offline": _flag,
    "max_concurrent_downloads": _int(1),
}


def _from_env(key: str, raw: str) -> object:
    """An environment string decoded by the type of its key."""
    default = getattr(Settings(), key)
    text = raw.strip()
    try:
        if key.endswith("_range"):
            sep = "-" if "-" in text else ","
            start, end = text.split(sep)
            return (int(start), int(end))
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise _Invalid(f"cannot be read from {raw!r}") from None
    if key == "default_instance" and not text:
        return None
    return raw


Report = Callable[[tuple[str, ...], str, str], None]


def _strings(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


def _table(raw: object, where: tuple[str, ...], struct: type[_Base], report: Report) -> bool:
    if not isinstance(raw, dict):
        report(where, f"{'.'.join(where)} must be a table", "invalid")
        return False
    known = struct.__struct_fields__
    for key in raw:
        if key not in known:
            report((*where, key), f"unknown key {key!r}{suggest(key, known)}", "unknown_key")
    return True


def _auth(raw: object, report: Report) -> AuthSettings:
    """Check the `[auth]` tables; the providers named must have what they need."""
    if not _table(raw, ("auth",), AuthSettings, report):
        return AuthSettings()
    assert isinstance(raw, dict)
    providers = raw.get("providers", [])
    if not _strings(providers) or not set(providers) <= {"mtls", "token"}:
        report(("auth", "providers"), 'must be a list of "mtls" and "token"', "invalid")
        providers = []
    elif len(set(providers)) != len(providers):
        report(("auth", "providers"), "lists a provider twice", "invalid")
    paths = raw.get("exempt_paths", [])
    if not _strings(paths) or not all(p.startswith("/") for p in paths):
        report(("auth", "exempt_paths"), "must be a list of paths starting with '/'", "invalid")
    services = raw.get("exempt_grpc_services", [])
    if not _strings(services) or any("/" in s for s in services):
        report(
            ("auth", "exempt_grpc_services"),
            'must be a list of full service names, e.g. "grpc.health.v1.Health"',
            "invalid",
        )
    mtls = raw.get("mtls", {})
    if _table(mtls, ("auth", "mtls"), MtlsSettings, report):
        for key in ("ca_cert", "server_cert", "server_key"):
            if key in mtls and not (isinstance(mtls[key], str) and mtls[key]):
                report(("auth", "mtls", key), "must be a file path", "invalid")
            elif "mtls" in providers and key not in mtls:
                report(("auth", "mtls", key), 'is required when providers has "mtls"', "invalid")
        for key in ("allowed_subjects", "allowed_sans", "trusted_proxies"):
            if key in mtls and not _strings(mtls[key]):
                report(("auth", "mtls", key), "must be a list of strings", "invalid")
        if "rest_tls" in mtls and not isinstance(mtls["rest_tls"], bool):
            report(("auth", "mtls", "rest_tls"), "must be true or false", "invalid")
        elif mtls.get("rest_tls") is False and not mtls.get("trusted_proxies"):
            report(
                ("auth", "mtls", "rest_tls"),
                "false needs trusted_proxies (client certificates then come only from them)",
                "invalid",
            )
        for san in mtls.get("allowed_sans", []) if _strings(mtls.get("allowed_sans")) else []:
            if san.partition(":")[0] not in ("DNS", "IP", "URI", "email"):
                report(
                    ("auth", "mtls", "allowed_sans"),
                    f"{san!r} must start with DNS:, IP:, URI: or email:",
                    "invalid",
                )
        for cidr in (
            mtls.get("trusted_proxies", []) if _strings(mtls.get("trusted_proxies")) else []
        ):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                report(("auth", "mtls", "trusted_proxies"), f"{cidr!r} is not a CIDR", "invalid")
    token = raw.get("token", {})
    if _table(token, ("auth", "token"), TokenSettings, report):
        if "tokens" in token and not _strings(token["tokens"]):
            report(("auth", "token", "tokens"), "must be a list of non-empty strings", "invalid")
        if "tokens_file" in token and not (
            isinstance(token["tokens_file"], str) and token["tokens_file"]
        ):
            report(("auth", "token", "tokens_file"), "must be a file path", "invalid")
        if "token" in providers and not (token.get("tokens") or token.get("tokens_file")):
            report(
                ("auth", "token"),
                'needs tokens or tokens_file when providers has "token"',
                "invalid",
            )
    try:
        return msgspec.convert(raw, AuthSettings)
    except msgspec.ValidationError:
        return AuthSettings()


def _read_config(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_bytes().decode("utf-8")
        return text, tomllib.loads(text)
    except OSError as exc:
        message = f"cannot read the config file: {exc.strerror or exc}"
    except UnicodeDecodeError:
        message = "the config file is not UTF-8 text"
    except tomllib.TOMLDecodeError as exc:
        message = f"invalid TOML: {exc}"
    raise SpecError(
        [Problem(path=str(path), line=0, column=0, field="config", message=message, code="syntax")]
    )


def load_settings(
    cli: Mapping[str, object], env: Mapping[str, str], config_path: Path | None
) -> Settings:
    """Merge flags > `TEI_RECONCILER_<KEY>` env vars > config file > defaults, and validate.

    `cli` maps setting keys to flag values (None: flag not given). Env values are decoded by
    the key's type ("9000", "8080-8180" or "8080,8180" for ranges). Raises SpecError listing
    every problem.
    """
    problems: list[Problem] = []
    text, config = _read_config(config_path) if config_path is not None else ("", {})
    layout = scan(text)
    sources: dict[str, str] = {}

    def report(key: tuple[str, ...], message: str, code: str) -> None:
        source = sources.get(key[0])
        line = column = 0
        where = ""
        if source is not None:
            message = f"{message} (from {source})"
        elif key[0] in config and config_path is not None:
            line, column = layout.locate(key)
            where = str(config_path)
        problems.append(
            Problem(
                path=where,
                line=line,
                column=column,
                field=".".join(key),
                message=message,
                code=code,
            )
        )

    known = (*RULES, "auth")
    for key in config:
        if key not in known:
            report((key,), f"unknown key {key!r}{suggest(key, known)}", "unknown_key")
    for key in cli:
        if key not in known:
            raise ValueError(f"no setting named {key!r}")
    values: dict[str, object] = {}
    for key, check in RULES.items():
        env_name = ENV_PREFIX + key.upper()
        try:
            if cli.get(key) is not None:
                sources[key] = "--" + key.replace("_", "-")
                raw = cli[key]
                raw = _from_env(key, raw) if isinstance(raw, str) else raw
            elif env_name in env:
                sources[key] = env_name
                raw = _from_env(key, env[env_name])
            elif key in config:
                raw = config[key]
            else:
                continue
            values[key] = check(raw)
        except _Invalid as exc:
            report((key,), f"{key} {exc}", "invalid")
    auth = _auth(config.get("auth", {}), report)
    merged = msgspec.structs.replace(Settings(), **values)
    _cross_check(merged, values, report)
    if problems:
        raise SpecError(problems)
    return msgspec.structs.replace(merged, auth=auth)


def _cross_check(s: Settings, given: Mapping[str, object], report: Report) -> None:
    """Rules between keys; each is reported at a key the user actually set, if any."""

    def at(*keys: str) -> tuple[str, ...]:
        return (next((k for k in keys if k in given), keys[0]),)

    if s.api_port and s.api_port == s.grpc_port:
        report(
            at("grpc_port", "api_port"),
            f"api_port and grpc_port are both {s.api_port}",
            "port_conflict",
        )
    ranges = {
        "instance_port_range": PortRange(*s.instance_port_range),
        "prometheus_port_range": PortRange(*s.prometheus_port_range),
    }
    (a, (a0, a1)), (b, (b0, b1)) = ranges.items()
    if a0 < b1 and b0 < a1:
        report(at(b, a), f"{a} and {b} overlap", "port_conflict")
    for port_key in ("api_port", "grpc_port"):
        port = getattr(s, port_key)
        for range_key, span in ranges.items():
            if span.covers(port):
                report(
                    at(port_key, range_key),
                    f"{port_key} {port} lies in {range_key} {span}",
                    "port_conflict",
                )
    if s.backoff_initial_secs > s.backoff_max_secs:
        report(
            at("backoff_initial_secs", "backoff_max_secs"),
            "backoff_initial_secs is larger than backoff_max_secs",
            "invalid",
        )
