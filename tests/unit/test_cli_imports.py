"""`mxgate` imports only the chosen command's module: `mxgate --version` and `mxgate --help`
import none, `mxgate trace` only trace's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mxgate.cli import ALL, COMMANDS, build_parser, command_in
from tests.support import REPO

LOADED = """
import contextlib, io, json, sys
from mxgate.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
print(json.dumps(sorted(m for m in sys.modules if m.startswith("mxgate.cli."))))
"""


def loaded(*argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_the_top_level_imports_no_command(argv):
    assert loaded(*argv) == []


def test_a_command_imports_its_own_module_and_what_it_uses():
    modules = loaded("trace", "--help")
    assert "mxgate.cli.trace" in modules
    assert not {"mxgate.cli.sandbox", "mxgate.cli.console", "mxgate.cli.check"} & set(modules)


def test_every_command_registers_under_its_own_name():
    parser = build_parser(ALL)
    (commands,) = (a for a in parser._actions if a.dest == "command")
    assert list(commands.choices) == list(COMMANDS)


def test_the_command_is_the_first_word_that_is_not_an_option():
    assert command_in(["--version"]) == ""
    assert command_in(["rules", "explain", "-x"]) == "rules"
    assert command_in(["-h", "trace"]) == "trace"
