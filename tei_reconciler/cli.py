"""The `tei-reconciler` command: dispatches each subcommand to the module that owns it.

Subcommands are imported lazily so `tei-reconciler engine` starts without loading the
reconciler, and `validate` without loading gRPC.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: subcommand -> (module, one-line help). Each module exposes `main(argv) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("tei_reconciler.service", "run the controller, REST API and gRPC router"),
    "validate": ("tei_reconciler.validate", "check state files (exit 0 valid, 1 invalid)"),
    "engine": ("tei_reconciler.engine.cli", "the built-in TEI-compatible server"),
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
        from tei_reconciler import __version__

        sys.stdout.write(f"tei-reconciler {__version__}\n")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        sys.stderr.write(f"tei-reconciler: unknown command {args[0]!r}\n\n{USAGE}")
        return 2
    command: Callable[[list[str]], int] = importlib.import_module(entry[0]).main
    return command(args[1:])
