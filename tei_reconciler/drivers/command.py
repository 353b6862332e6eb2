"""The command line and the environment a TEI process is launched with.

The field table (desired/fields.py) says which instance field becomes which TEI flag; here
those flags are put in order, with the ports assigned, and the environment is built: the
manager's own minus the names TEI reads as flags, plus the instance's, plus the markers that
let a restarted reconciler find the process again.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping

from tei_reconciler._types import Secret
from tei_reconciler.desired.fields import FIELDS
from tei_reconciler.desired.rules import API_KEY_ENV
from tei_reconciler.desired.spec import (
    MARKER_INSTANCE,
    MARKER_OWNER,
    MARKER_SPEC_HASH,
    InstanceSpec,
    spec_hash,
)
from tei_reconciler.errors import PermanentError

_MAX_KEY_BYTES = 4096

#: TEI reads each of its flags from an env var with a generic name (tei-wire.md section 4):
#: a leaked `PORT` or `HOSTNAME` (Docker sets it) would silently change a child's behaviour.
TEI_ENV_NAMES = frozenset(
    {
        "PORT",
        "HOSTNAME",
        "MODEL_ID",
        "REVISION",
        "API_KEY",
        "POOLING",
        "DTYPE",
        "AUTO_TRUNCATE",
        "JSON_OUTPUT",
        "PROMETHEUS_PORT",
        "PAYLOAD_LIMIT",
        "TOKENIZATION_WORKERS",
        "SERVED_MODEL_NAME",
        "DEFAULT_PROMPT_NAME",
        "DEFAULT_PROMPT",
        "DENSE_PATH",
        "UDS_PATH",
        "DISABLE_SPANS",
        "OTLP_ENDPOINT",
        "OTLP_SERVICE_NAME",
        "CORS_ALLOW_ORIGIN",
        "CUDA_VISIBLE_DEVICES",
    }
)


def resolve_binary(tei_binary: str, protocol: str) -> list[str]:
    """The argv prefix that starts TEI: `auto`, `builtin`, or a path."""
    builtin = [sys.executable, "-m", "tei_reconciler", "engine"]
    if protocol == "http":
        builtin.append("--http")
    if tei_binary == "builtin":
        return builtin
    if tei_binary == "auto":
        found = shutil.which("text-embeddings-router")
        return [found] if found else builtin
    return [tei_binary]


def build_argv(
    prefix: list[str], spec: InstanceSpec, *, host: str, port: int, prom: int
) -> list[str]:
    """DESIGN.md section 5: every field that has a TEI flag (in the field table's order, each
    when set; the ports as assigned), `--hostname` after the port, `--json-output`, then
    `extra_args`."""
    assigned = {"port": port, "prometheus_port": prom}
    argv = [*prefix]
    for name, field in FIELDS.items():
        if field.flag is None:
            continue
        value = assigned[name] if field.assigned else getattr(spec, name)
        if value is not None:
            argv += [field.flag, field.render(value)]
        if name == "port":
            argv += ["--hostname", host]
    return [*argv, "--json-output", *spec.extra_args]


def read_api_key(path: str) -> Secret:
    """The key in `api_key_file` (one line; surrounding whitespace dropped). Raises
    PermanentError("ApiKeyUnreadable") for a file that is missing, unreadable, empty or not a
    single line of text: the instance fails with that reason until the file is fixed."""

    def refuse(why: str) -> PermanentError:
        return PermanentError("ApiKeyUnreadable", f"api_key_file {path}: {why}")

    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    if len(raw) > _MAX_KEY_BYTES:
        raise refuse(f"larger than {_MAX_KEY_BYTES} bytes: not a key")
    try:
        key = raw.decode().strip()
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    if not key:
        raise refuse("empty")
    if any(c in key for c in "\0\r\n"):
        raise refuse("more than one line")
    return Secret(key)


def build_env(
    base: Mapping[str, str],
    spec: InstanceSpec,
    *,
    cuda: str,
    owner: str,
    api_key: Secret | None = None,
) -> dict[str, str]:
    """The manager's env minus TEI's generic names and our own settings, plus the instance's,
    plus its API key as TEI reads it (`API_KEY`: never on the command line)."""
    env = {
        k: v
        for k, v in base.items()
        if k not in TEI_ENV_NAMES and not k.startswith(("MAX_", "TEI_RECONCILER_"))
    }
    env.update(spec.env)
    env["CUDA_VISIBLE_DEVICES"] = cuda
    env[MARKER_OWNER] = owner
    env[MARKER_INSTANCE] = spec.name
    env[MARKER_SPEC_HASH] = spec_hash(spec)
    if api_key is not None:
        env[API_KEY_ENV] = api_key.reveal()
    return env
