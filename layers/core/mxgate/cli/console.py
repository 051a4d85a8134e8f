"""`mxgate console`: the web console, on this machine's state or (--aws) the deployed stack's,
served on loopback behind a random token."""

from __future__ import annotations

import argparse
import sys

from mxgate.cli import COMMANDS
from mxgate.cli.common import add_desk_arguments, desk_of
from mxgate.local.bootstrap import is_loopback

AWS_NAMES = ["state_table", "defer_queue", "dead_letter_queue", "archive_id"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "console",
        help=COMMANDS["console"].help,
        description="Serve the operators' web console on 127.0.0.1 (nothing listens beyond "
        "loopback unless --host says so). Every page needs the random token printed with the "
        "URL. With --aws it runs here, against the deployed stack's table, queues, bucket and "
        "Mail Manager archive, with your AWS credentials: nothing is deployed for it.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8025, help="port (default 8025; 0: a free one)")
    add_desk_arguments(parser, AWS_NAMES)
    parser.set_defaults(handler=console)


def console(args: argparse.Namespace) -> int:
    from mxgate.console.app import create_app, serve  # noqa: PLC0415 -- the web stack on demand
    from mxgate.console.security import new_token  # noqa: PLC0415

    desk = desk_of(args)
    token = new_token()
    app = create_app(desk, token)
    if not is_loopback(args.host):
        print(
            f"mxgate console: warning: listening on {args.host}, beyond loopback; anyone who "
            "reaches it needs only the token",
            file=sys.stderr,
        )

    def ready(port: int) -> None:
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"mxgate console for {desk.where}", flush=True)
        print(f"  http://{shown}:{port}/?token={token}", flush=True)
        print("Ctrl-C stops.", flush=True)

    serve(app, args.host, args.port, ready)  # until Ctrl-C (uvicorn stops gracefully)
    return 0
