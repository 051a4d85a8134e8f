"""A running gateway is found by the commands started from its directory (its run file), keeps
its warnings and errors in a file, and says nothing about a library's deprecations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mxgate.local.runfile import RUN_FILE, running_gateway
from tests.support import RunningGateway, connect, local_config, start_gateway, wait_for

pytestmark = pytest.mark.e2e


def mxgate(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user types it there: no --home, no MXGATE_HOME or MXGATE_CONFIG."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "mxgate", *args],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def submit(gateway: RunningGateway, recipient: str) -> None:
    """Over the AUTH ingress point: STARTTLS, then AUTH, as the submission swaks line does."""
    with connect(gateway.ports["smtp_auth"], tls=True) as smtp:
        smtp.login("SubmissionIngressPoint", "local-submission-password")
        smtp.sendmail(
            "app@customer-support.nutrition.co",
            [recipient],
            f"From: app@customer-support.nutrition.co\r\nTo: {recipient}\r\n"
            "Subject: found\r\n\r\nhello\r\n".encode(),
        )


def found_home(project: Path) -> Path | None:
    running = running_gateway(project)
    return running.home if running is not None else None


def test_commands_from_the_gateways_directory_find_its_home(tmp_path):
    project = tmp_path / "project"
    config = tmp_path / "config"
    config.mkdir()
    first = start_gateway(project / "state-elsewhere", local_config(config))  # runs in project/
    second = None
    try:
        # the run file is written as the banner is printed, just after the ports file
        wait_for(lambda: found_home(project) == first.home)
        submit(first, "carol@nutrition.co")

        def traced() -> str | None:
            result = mxgate(project, "trace", "--last")
            return result.stdout if "delivered (m365)" in result.stdout else None

        timeline = wait_for(traced, timeout=60)
        assert "carol@nutrition.co" in timeline
        assert "login_data" not in (first.home / "gateway.out").read_text()

        # a second gateway from the same directory leaves the first one's run file alone,
        # and says so, in its error log too
        second = start_gateway(project / "second-home", local_config(config))
        errors = second.home / "logs" / "errors.log"
        wait_for(lambda: "another gateway started from this directory" in errors.read_text())
        assert f"trace --home {second.home}" in (second.home / "gateway.out").read_text()
        assert found_home(project) == first.home
    finally:
        if second is not None:
            second.stop()
        first.stop()
    assert not (project / RUN_FILE).exists()
    gone = mxgate(project, "trace")
    assert gone.returncode == 1
    assert f"no gateway is running from {project}" in gone.stderr
