"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mxgate.errors import ConfigError
from mxgate.local.runfile import RUN_FILE, running_gateway
from mxgate.local.runtime import Paths
from mxgate.local.settings import LocalSettings


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", type=Path, help="state directory (env MXGATE_HOME, default .mxgate)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="local configuration (env MXGATE_CONFIG, default config/local.yaml)",
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


def state_dir(settings: LocalSettings) -> Paths:
    """The home of a gateway that has run, or a ConfigError saying where mxgate looked."""
    paths = Paths(settings.home)
    if paths.state_db.exists():
        return paths
    if settings.explicit("home"):
        raise ConfigError(f"no gateway state under {settings.home} (has `mxgate run` run there?)")
    raise ConfigError(
        f"no gateway is running from {Path.cwd()} (no live {RUN_FILE}) and the default home "
        f"{settings.home} holds no state: start one with `make run` here, or name a home with "
        "--home or MXGATE_HOME"
    )


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
