"""The run file: commands started from a gateway's directory find its home by themselves."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mxgate.adapters.local.state import SqliteState
from mxgate.cli import main
from mxgate.cli.common import settings_from
from mxgate.local.runfile import (
    RUN_FILE,
    RunFile,
    claim_run_file,
    release_run_file,
    running_gateway,
)
from mxgate.records import Stage, TimelineEvent


def record(home: Path, pid: int | None = None) -> RunFile:
    return RunFile(
        pid=os.getpid() if pid is None else pid,
        home=home,
        config=home.parent / "local.yaml",
        started_at=datetime.now(UTC),
    )


def gone_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def project(tmp_path, monkeypatch):
    for variable in ("MXGATE_HOME", "MXGATE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_gateway_claims_the_run_file_and_releases_only_its_own(project):
    mine = record(project / "home")
    assert claim_run_file(project, mine) is None
    assert running_gateway(project) == mine
    release_run_file(project, pid=mine.pid + 1)  # not its own: kept
    assert (project / RUN_FILE).exists()
    release_run_file(project, pid=mine.pid)
    assert not (project / RUN_FILE).exists()
    assert running_gateway(project) is None


def test_a_stale_run_file_is_ignored_and_replaced(project):
    stale = record(project / "old-home", pid=gone_pid())
    (project / RUN_FILE).write_text(stale.model_dump_json())
    assert running_gateway(project) is None
    mine = record(project / "home")
    assert claim_run_file(project, mine) is None
    assert running_gateway(project) == mine


def test_a_live_gateway_keeps_its_run_file(project):
    first = record(project / "first", pid=os.getppid())  # a live process that is not this one
    assert claim_run_file(project, first) is None
    assert claim_run_file(project, record(project / "second")) == first
    assert running_gateway(project) == first


def test_an_unreadable_run_file_is_no_gateway(project):
    (project / RUN_FILE).write_text("{not json")
    assert running_gateway(project) is None


def options(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"home": None, "config": None, **given})


def test_commands_take_the_running_gateways_home_and_configuration(project, monkeypatch):
    running = record(project / "home")
    claim_run_file(project, running)
    found = settings_from(options())
    assert (found.home, found.config) == (running.home, running.config)
    assert settings_from(options(home=Path("other"))).home == Path("other")  # the option wins
    monkeypatch.setenv("MXGATE_HOME", "/srv/mxgate")  # and the environment
    found = settings_from(options())
    assert (found.home, found.config) == (Path("/srv/mxgate"), running.config)
    assert settings_from(options(), find_running=False).config == Path("config/local.yaml")


def test_trace_without_home_reads_the_running_gateway(project, capsys):
    home = project / "elsewhere" / "home"
    home.mkdir(parents=True)
    state = SqliteState(home / "state.db")
    state.record(
        TimelineEvent(
            message_id="01M8R83WWD0GQWNV23QVVT3JD2",
            at=datetime.now(UTC),
            stage=Stage.ACCEPTED,
            detail="264 bytes from 127.0.0.1 for 1 recipient(s)",
        )
    )
    state.close()
    claim_run_file(project, record(home))
    assert main(["trace", "--last"]) == 0
    assert capsys.readouterr().out.startswith("message 01M8R83WWD0GQWNV23QVVT3JD2\n")


def test_without_a_running_gateway_or_state_the_message_says_where_it_looked(project, capsys):
    assert main(["trace"]) == 1
    assert capsys.readouterr().err == (
        f"mxgate: error: no gateway is running from {project} (no live {RUN_FILE}) and the "
        "default home .mxgate holds no state: start one with `make run` here, or name a home "
        "with --home or MXGATE_HOME\n"
    )
    assert main(["dlq", "list"]) == 1
    assert "no gateway is running from" in capsys.readouterr().err
