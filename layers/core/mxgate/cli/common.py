"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from mxgate.desk import Desk
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.runfile import running_gateway
from mxgate.local.settings import LocalSettings
from mxgate.message.text import shown
from mxgate.moment import Moment, parse_moment
from mxgate.ports import Clock


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", type=Path, help="state directory (env MXGATE_HOME, default .mxgate)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="local configuration (env MXGATE_CONFIG, default config/local.yaml)",
    )


def add_message_arguments(
    parser: argparse.ArgumentParser, *, ip: str, helo: str, ingress: str
) -> None:
    """A message and the SMTP session that brings it: FILE, the envelope, the sender's IP,
    HELO and TLS, the ingress point."""
    parser.add_argument("message", type=Path, metavar="FILE")
    parser.add_argument("--mail-from", required=True, metavar="A", help="the envelope sender")
    parser.add_argument(
        "--rcpt", action="append", required=True, metavar="B", help="an envelope recipient"
    )
    parser.add_argument("--ip", default=ip, help=f"the sender's IP (default {ip})")
    parser.add_argument("--helo", default=helo, help=f"the EHLO name (default {helo})")
    parser.add_argument(
        "--tls",
        default="TLS1_3",
        choices=["TLS1_2", "TLS1_3", "none"],
        help="the session's TLS protocol (default TLS1_3; none: no STARTTLS)",
    )
    parser.add_argument(
        "--ingress-point", help=f"the ingress point's logical id (default: {ingress})"
    )


def settings_from(
    args: argparse.Namespace, *, find_running: bool = True, **overrides: Any
) -> LocalSettings:
    """The environment's settings with the command's options on top. Where neither names a
    home (or a configuration), those of the gateway running from this directory, if any."""
    settings = LocalSettings.from_env()
    update = {
        k: v
        for k, v in {
            "home": getattr(args, "home", None),
            "config": getattr(args, "config", None),
            **overrides,
        }.items()
        if v is not None
    }
    settings = settings.model_copy(update=update) if update else settings
    running = running_gateway(Path.cwd()) if find_running else None
    if running is not None:
        found = {
            field: getattr(running, field)
            for field in ("home", "config")
            if not settings.explicit(field)
        }
        settings = settings.model_copy(update=found) if found else settings
    return settings


def positive_int(text: str) -> int:
    """An option's whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def add_aws_arguments(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """--aws, --stack, --region, and a flag for each stack resource the command reads."""
    from mxgate.adapters.aws.operator import NAMES  # noqa: PLC0415 -- plain data, no boto3

    aws = parser.add_argument_group("on AWS (the deployed stack, with your AWS credentials)")
    aws.add_argument(
        "--aws", action="store_true", help="the deployed stack instead of this machine"
    )
    aws.add_argument("--stack", help="read the resource names from this stack's outputs")
    aws.add_argument("--region", help="AWS region (default: the AWS configuration's)")
    for name in names:
        flag, variable, output = NAMES[name]
        aws.add_argument(flag, dest=name, help=f"env {variable}; the stack output {output}")


def moment_argument(value: str) -> Moment:
    """An argparse type for --since / --until (a time, or a duration back from now): resolved
    by `resolved` with the clock of the command's composition root."""
    try:
        return parse_moment(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def resolved(given: Moment | None, clock: Clock) -> datetime | None:
    return given.resolve(clock.now()) if given is not None else None


def add_desk_arguments(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """This machine's state (--home, --config), or the deployed stack's (--aws ...)."""
    add_settings_arguments(parser)
    add_aws_arguments(parser, names)
    parser.add_argument(
        "--routes",
        type=Path,
        default=Path("config/routes.yaml"),
        help="with --aws: the routes file deployed in the config layer (default config/routes.yaml)",
    )


def desk_of(args: argparse.Namespace) -> Desk:
    if getattr(args, "aws", False):
        from mxgate.adapters.aws.bootstrap import aws_desk  # noqa: PLC0415 -- boto3
        from mxgate.adapters.aws.operator import operator_aws  # noqa: PLC0415

        return aws_desk(operator_aws(args), args.routes)
    return Bootstrap(settings_from(args), clock=args.clock).desk()


def cut(text: object, width: int) -> str:
    """One line of at most `width` characters, an ellipsis where it was cut."""
    text = shown(" ".join(str(text or "").split()))
    return text if len(text) <= width else text[: width - 1] + "…"
