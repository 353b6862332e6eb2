"""The kubectl-style client commands: `get`, `describe`, `logs`, `diff`, `apply`, `start`,
`stop`, `restart`, `delete`, `wait`, `models` and `rollout`, each a few requests to a running
reconciler's REST API.

The commands never touch the state file or a process themselves: the server owns both, so the
client works the same against a local reconciler and one in a cluster (`--server`). Exit
statuses follow kubectl: 0 success, 1 the server refused (its error printed as `error: CODE:
message`), 2 the server could not be reached or the command line was wrong; `diff` is 0 no
change, 1 changes, 2 error. Each `main_<cmd>(argv)` is what `tei-reconciler <cmd>` calls.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

import anyio

from tei_reconciler.client import commands, models, rollout
from tei_reconciler.client.http import DEFAULT_SERVER, Client, Connection, ServerError, Unreachable
from tei_reconciler.client.render import server_error

Handler = Callable[[Client, argparse.Namespace, TextIO], Awaitable[int]]

SERVER_ENV = "TEI_RECONCILER_SERVER"
TOKEN_ENV = "TEI_RECONCILER_TOKEN"  # noqa: S105 (the variable's name, not a token)


def common_options(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The connection options. `defaults=False` for a verb's own parser (`models pull`):
    there they may be given too, and must not reset what was given before the verb."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=default(os.environ.get(SERVER_ENV) or DEFAULT_SERVER),
        help=f"the reconciler's REST API (env {SERVER_ENV}; default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--cacert",
        default=default(None),
        help="CA bundle that signs the server's certificate (https)",
    )
    group.add_argument(
        "--cert", default=default(None), help="client certificate (PEM) when the API requires mTLS"
    )
    group.add_argument("--key", default=default(None), help="the client certificate's private key")
    group.add_argument(
        "--token",
        default=default(os.environ.get(TOKEN_ENV)),
        help=f"bearer token when the API requires one (env {TOKEN_ENV})",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=default(30.0),
        metavar="SECS",
        help="seconds to wait for each answer (default 30)",
    )
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )


def _name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="instance name")


def _get(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="one instance (default: all)")
    _output(p)


def _describe(p: argparse.ArgumentParser) -> None:
    _name(p)
    _output(p)


def _logs(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    _output(p)


def _diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a state file to compare with the server's")


def _apply(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", required=True, metavar="FILE", help="the new state file")
    p.add_argument(
        "--revision",
        metavar="REV",
        help="replace only if the server's state is still at this revision "
        "(default: the revision read just before writing)",
    )
    _output(p)


def _lifecycle(p: argparse.ArgumentParser) -> None:
    _name(p)
    _output(p)


def _wait(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument(
        "--for",
        dest="condition",
        choices=("ready", "stopped", "deleted"),
        default="ready",
        help="what to wait for (default: ready)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECS",
        help="give up after SECS seconds (default 300)",
    )


#: command -> (description, argument setup, handler)
SPECS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "get": ("list instances, or show one, with their phase", _get, commands.get),
    "describe": ("show one instance in detail, with its events", _describe, commands.describe),
    "logs": ("print an instance's log", _logs, commands.logs),
    "diff": ("compare a state file with the server's (exit 1 on changes)", _diff, commands.diff),
    "apply": ("replace the whole desired state with a file", _apply, commands.apply),
    "start": ("set an instance's desired state to running", _lifecycle, commands.start),
    "stop": ("set an instance's desired state to stopped", _lifecycle, commands.stop),
    "restart": ("restart an instance (a new process, same spec)", _lifecycle, commands.restart),
    "delete": ("remove an instance from the desired state", _lifecycle, commands.delete),
    "wait": ("wait until an instance is ready, stopped or deleted", _wait, commands.wait),
    "models": ("list, fetch and remove models (ls | pull | rm)", models.setup, models.run),
    "rollout": (
        "follow or restart an instance's rollout (status | restart)",
        rollout.setup,
        rollout.run,
    ),
}


def parser_for(command: str) -> argparse.ArgumentParser:
    description, setup, _ = SPECS[command]
    parser = argparse.ArgumentParser(
        prog=f"tei-reconciler {command}", description=description, parents=[common_options()]
    )
    setup(parser)
    return parser


def run(command: str, argv: list[str], out: TextIO | None = None) -> int:
    """Parse `argv` for `command`, run it against the server, and map failures to exit codes."""
    args = parser_for(command).parse_args(argv)
    out = out or sys.stdout
    error_status = 2 if command == "diff" else 1
    if args.key is not None and args.cert is None:
        sys.stderr.write("error: --key needs --cert\n")
        return 2
    conn = Connection(
        server=args.server,
        cacert=args.cacert,
        cert=args.cert,
        key=args.key,
        token=args.token,
        timeout=args.request_timeout,
    )
    handler = SPECS[command][2]

    async def go() -> int:
        async with Client(conn) as api:
            return await handler(api, args, out)

    try:
        return anyio.run(go, backend="asyncio")
    except ServerError as exc:
        sys.stderr.write(server_error(exc))
        return error_status
    except Unreachable as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except commands.CommandError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.status if command != "diff" else 2
    except (models.PullFailed, rollout.RolloutFailed) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tei-reconciler logs x | head`
        return 0


def main_get(argv: list[str]) -> int:
    return run("get", argv)


def main_describe(argv: list[str]) -> int:
    return run("describe", argv)


def main_logs(argv: list[str]) -> int:
    return run("logs", argv)


def main_diff(argv: list[str]) -> int:
    return run("diff", argv)


def main_apply(argv: list[str]) -> int:
    return run("apply", argv)


def main_start(argv: list[str]) -> int:
    return run("start", argv)


def main_stop(argv: list[str]) -> int:
    return run("stop", argv)


def main_restart(argv: list[str]) -> int:
    return run("restart", argv)


def main_delete(argv: list[str]) -> int:
    return run("delete", argv)


def main_wait(argv: list[str]) -> int:
    return run("wait", argv)


def main_models(argv: list[str]) -> int:
    return run("models", argv)


def main_rollout(argv: list[str]) -> int:
    return run("rollout", argv)
