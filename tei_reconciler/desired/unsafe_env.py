"""Environment variables an instance's `env` may not set: those that run code of the writer's
choosing in the child (or change what it loads or runs), whatever model it serves.

Whoever may write the state file (the REST API, a GitOps repository) chooses the instance's
environment. A TEI child is a Rust binary that may start Python (its python backend), and the
built-in engine is Python itself, so a loader or interpreter variable pointing at a file the
writer controls is code execution on the host: `PYTHONPATH` runs a `sitecustomize.py`,
`LD_PRELOAD` a shared library, `PATH` a different `python`. The list follows glibc's
`unsecvars.h` (what the loader ignores for setuid programs) and sudo's `env_reset` table, plus
the interpreters, CUDA's and OpenSSL's plug-in hooks. Names compare case-insensitively: the
loader reads only upper case, but refusing `ld_preload` costs nobody anything.
"""

from __future__ import annotations

from typing import NamedTuple


class EnvClass(NamedTuple):
    """One family of refused variables: exact names, name prefixes, and who reads them."""

    reader: str  # completes "env may not set X: ...", e.g. "Python reads it at start"
    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()


#: Every refused variable, by the part of the child that reads it. README.md lists them.
UNSAFE_ENV: tuple[EnvClass, ...] = (
    EnvClass(
        "the dynamic loader and the C library read it",
        frozenset(
            {
                "GCONV_PATH",
                "GETCONF_DIR",
                "GLIBC_TUNABLES",
                "HOSTALIASES",
                "LOCALDOMAIN",
                "LOCPATH",
                "MALLOC_TRACE",
                "NLSPATH",
                "RES_OPTIONS",
                "RESOLV_HOST_CONF",
            }
        ),
        ("LD_", "_RLD"),
    ),
    EnvClass("it chooses the programs the child starts", frozenset({"PATH"})),
    EnvClass(
        "shells read it at start",
        frozenset(
            {"BASH_ENV", "BASHOPTS", "CDPATH", "ENV", "GLOBIGNORE", "IFS", "PS4", "SHELLOPTS"}
            | {"ZDOTDIR"}
        ),
        ("BASH_FUNC_",),
    ),
    # HOME decides Python's user site-packages, whose .pth files and usercustomize run at start
    EnvClass("Python reads it at start", frozenset({"HOME"}), ("PYTHON",)),
    EnvClass("Perl reads it at start", frozenset(), ("PERL",)),
    EnvClass("Ruby reads it at start", frozenset({"GEM_HOME", "GEM_PATH"}), ("RUBY",)),
    EnvClass("Node.js reads it at start", frozenset({"NODE_OPTIONS", "NODE_PATH"})),
    EnvClass(
        "the Java runtime reads it at start",
        frozenset({"CLASSPATH", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"}),
    ),
    EnvClass("Lua reads it at start", frozenset({"LUA_INIT", "LUA_PATH", "LUA_CPATH"})),
    EnvClass("the CUDA driver loads the library it names", frozenset(), ("CUDA_INJECTION",)),
    EnvClass(
        "OpenSSL loads the configuration or modules it names",
        frozenset({"OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES"}),
    ),
)

_HINTS = {
    "HOME": " (set HF_HOME to choose the model cache)",
    "PATH": " (the binary is the manager's tei_binary setting)",
}


def unsafe_env(name: str) -> str | None:
    """Why `env` may not set `name`, or None when it may."""
    upper = name.upper()
    for family in UNSAFE_ENV:
        if upper in family.names or upper.startswith(family.prefixes):
            hint = _HINTS.get(upper, "")
            return f"{family.reader}, so it could run code of the writer's choosing{hint}"
    return None
