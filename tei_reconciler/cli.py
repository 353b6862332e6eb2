"""The `tei-reconciler` command: dispatches each subcommand to the module that owns it.

Subcommands are imported lazily so `tei-reconciler engine` starts without loading the
reconciler, and `validate` without loading gRPC.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from tei_reconciler import __version__

_CLIENT = "tei_reconciler.client.cli:main_"  # the kubectl-style client commands

#: subcommand -> (module, one-line help). Each module exposes `main(argv) -> int`; a
#: "module:function" entry names another entry point (several client commands share a module).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("tei_reconciler.service", "run the controller, REST API and gRPC router"),
    "validate": ("tei_reconciler.validate", "check state files (exit 0 valid, 1 invalid)"),
    "engine": ("tei_reconciler.engine.cli", "the built-in TEI-compatible server"),
    "get": (_CLIENT + "get", "list instances, or show one"),
    "describe": (_CLIENT + "describe", "show one instance in detail, with events"),
    "logs": (_CLIENT + "logs", "print an instance's log (-f to follow)"),
    "diff": (_CLIENT + "diff", "compare a state file with the server's (exit 1 on changes)"),
    "apply": (_CLIENT + "apply", "replace the desired state with a file (apply -f FILE)"),
    "start": (_CLIENT + "start", "set an instance's desired state to running"),
    "stop": (_CLIENT + "stop", "set an instance's desired state to stopped"),
    "restart": (_CLIENT + "restart", "restart an instance"),
    "delete": (_CLIENT + "delete", "remove an instance from the desired state"),
    "wait": (_CLIENT + "wait", "wait until an instance is ready (--for ready)"),
    "models": (_CLIENT + "models", "list, fetch (with progress) and remove models"),
    "rollout": (_CLIENT + "rollout", "follow a rollout (status NAME) or start one (restart NAME)"),
}

USAGE = "usage: tei-reconciler <command> [options]\n\ncommands:\n" + "".join(
    f"  {name:<10} {help_}\n" for name, (_, help_) in COMMANDS.items()
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(USAGE)
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        sys.stdout.write(f"tei-reconciler {__version__}\n")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        sys.stderr.write(f"tei-reconciler: unknown command {args[0]!r}\n\n{USAGE}")
        return 2
    module, _, function = entry[0].partition(":")
    command: Callable[[list[str]], int] = getattr(
        importlib.import_module(module), function or "main"
    )
    return command(args[1:])
