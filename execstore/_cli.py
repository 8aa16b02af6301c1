"""Command line: ``python -m execstore server start|status|stop``.

Every command reads its settings from the ``EXECSTORE_*`` environment
variables. Exit codes: 0 on success, 1 when ``server status`` finds no
running server, 2 on a usage error or a failure.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from ._config import Settings
from ._errors import ExecutionStoreError
from ._server import ServerStatus, ensure_running, server_status, stop_server

EXIT_OK = 0
EXIT_NOT_RUNNING = 1
EXIT_FAILED = 2

_DESCRIPTION = """\
Manage the embedded MongoDB server that execstore starts when
EXECSTORE_DATABASE_URI is unset. The server listens on 127.0.0.1 only and
keeps its files in EXECSTORE_DATA_DIR (default ~/.execstore).
EXECSTORE_MONGOD names the mongod binary to run.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    try:
        settings = Settings.from_env()
        exit_code: int = args.command(settings, args)
    except ExecutionStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return exit_code


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m execstore", description=_DESCRIPTION
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log server starts and stops"
    )
    groups = parser.add_subparsers(title="command groups", required=True)

    server = groups.add_parser("server", help="manage the embedded MongoDB server")
    commands = server.add_subparsers(title="commands", required=True)
    start = commands.add_parser(
        "start",
        help="start the server unless it is running, then print its URI",
        description="Start the embedded server unless it is running. "
        "Print its URI and data directory.",
    )
    start.set_defaults(command=_start)

    status = commands.add_parser(
        "status",
        help="print the server's pid, port, URI and data directory",
        description="Print the running server's pid, port, URI and data "
        "directory. Exit with code 1 if no server is running.",
    )
    status.set_defaults(command=_status)

    stop = commands.add_parser(
        "stop",
        help="stop the server",
        description="Stop the embedded server with SIGTERM, then SIGKILL "
        "if it has not exited within --timeout seconds.",
    )
    stop.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for a clean shutdown before SIGKILL (default: 10)",
    )
    stop.set_defaults(command=_stop)
    return parser


def _start(settings: Settings, args: argparse.Namespace) -> int:
    was_running = server_status(settings) is not None
    uri = ensure_running(settings)

    state = "already running" if was_running else "started"
    print(f"embedded MongoDB server {state} at {uri}")
    print(f"data directory: {settings.data_dir}")

    if settings.database_uri:
        print(
            "note: EXECSTORE_DATABASE_URI is set, so execstore connects to that "
            "server, not to this one"
        )
    return EXIT_OK


def _status(settings: Settings, args: argparse.Namespace) -> int:
    status = server_status(settings)
    if status is None:
        print(f"not running (data directory: {settings.data_dir})")
        return EXIT_NOT_RUNNING

    _print_status(status)
    return EXIT_OK


def _print_status(status: ServerStatus) -> None:
    print("running")
    print(f"pid: {status.pid}")
    print(f"port: {status.port}")
    print(f"uri: {status.uri}")
    print(f"data directory: {status.data_dir}")


def _stop(settings: Settings, args: argparse.Namespace) -> int:
    status = server_status(settings)
    stopped = stop_server(settings, timeout=args.timeout)

    if stopped and status is not None:
        print(f"stopped the embedded MongoDB server (pid {status.pid})")
    elif stopped:
        print("stopped the embedded MongoDB server")
    else:
        print("no embedded MongoDB server was running")
    print(f"data directory: {settings.data_dir}")
    return EXIT_OK


def _positive_seconds(text: str) -> float:
    """Parse a --timeout value: a finite number of seconds above zero."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(
            f"invalid --timeout {text!r}: expected a positive number of seconds"
        )
    return seconds
