"""`tei-reconciler validate PATH...`: check state files without running anything.

Made for GitOps CI: a change to the state file can be rejected before it is merged, with the
same rules and the same `file:line:col: field: message` errors the running reconciler reports.
Exit status: 0 every file is valid, 1 some file is invalid, 2 usage error or unreadable file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from tei_reconciler.desired.statefile import load_state
from tei_reconciler.errors import Problem, SpecError, StateFileError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tei-reconciler validate",
        description="Check tei-reconciler state files (exit 0 valid, 1 invalid, 2 error).",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    problems: list[Problem] = []
    valid: list[Path] = []
    unreadable = False
    for path in args.paths:
        try:
            load_state(path)
        except SpecError as exc:
            problems.extend(exc.problems)
        except StateFileError as exc:
            sys.stderr.write(f"tei-reconciler validate: {exc}\n")
            unreadable = True
        else:
            valid.append(path)
    if args.format == "json":
        sys.stdout.write(msgspec.json.encode(problems).decode() + "\n")
    else:
        for path in valid:
            sys.stdout.write(f"{path}: ok\n")
        for problem in problems:
            sys.stdout.write(f"{problem}\n")
    if unreadable:
        return 2
    return 1 if problems else 0
