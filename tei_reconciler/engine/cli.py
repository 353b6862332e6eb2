"""`tei-reconciler engine`: parse TEI's flags, run the engine, map start errors to exit 1.

Usage errors exit 2 (argparse, like clap); fatal start errors print TEI's "Error: ..." and exit
1; a graceful shutdown exits 0.
"""

from __future__ import annotations

import sys

import anyio

from tei_reconciler.engine.args import parse_args
from tei_reconciler.engine.faults import parse_faults
from tei_reconciler.engine.logs import LOGGER, setup_logging
from tei_reconciler.engine.types import StartupError


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup_logging(json_output=args.json_output)
    shown = {k: v for k, v in vars(args).items() if k not in {"hf_token", "hf_api_token"}}
    if shown.get("api_key"):
        shown["api_key"] = "<redacted>"
    LOGGER.info("Args %s", shown)
    try:
        faults = parse_faults()
        from tei_reconciler.engine.app import run  # noqa: PLC0415 - parse errors stay cheap

        return anyio.run(run, args, faults, backend="asyncio")
    except (StartupError, BaseExceptionGroup) as exc:
        error = _startup_error(exc)
        if error is None:
            raise
        LOGGER.error("%s", error)
        sys.stderr.write(f"Error: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 0


def _startup_error(exc: BaseException) -> StartupError | None:
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_error(inner)
            if found is not None:
                return found
    return None
