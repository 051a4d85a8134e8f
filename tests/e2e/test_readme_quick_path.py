"""The README's quick path, run as written, on a clean clone of the repository.

The commands are read from the README itself (the fenced `sh` blocks of its "Quick path"
section): the first starts the gateway and runs in the background, as in a terminal of its
own; the lines of the next are run one by one, as typed in a second terminal. So the manual
cannot drift from the product. Two things differ from a newcomer's machine, and only those:

- The ports. Tests run beside other gateways, so the gateway gets free ports through the
  environment variables the README documents (MXGATE_SMTP_PORT and the rest), and a command
  that names a default port (`127.0.0.1:2525`) is given the free one instead.
- The virtualenv. Building `.venv` takes minutes, so the clone links to this checkout's, and
  make's stamp is kept newer than the files it depends on, so `make run` starts at once and
  installs nothing into it. The linked `.venv` has mxgate installed in editable mode, pointing
  at this checkout; PYTHONPATH puts the clone's own `layers/core` first, so the clone's code runs.

The clone is of the committed HEAD: what is not committed is not in it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import REPO, free_port, wait_for

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
SECTION = "## Quick path"
FIRST_SCREEN = 50  # lines: the quick path's commands all fit on the README's first screen
STARTED = "Ctrl-C stops."  # the banner's last line


def section(readme: str) -> str:
    return readme.split(SECTION, 1)[1].split("\n## ", 1)[0]


def shell_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def default_ports() -> dict[str, str]:
    """Each listening port's variable -> its default, from the shipped local.yaml."""
    document = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    ports = {
        "MXGATE_SMTP_PORT": document["smtp"]["port"],
        "MXGATE_SMTP_AUTH_PORT": document["smtp"]["auth_port"],
    }
    for host, spec in document["mailbox_hosts"].items():
        ports[f"MXGATE_MAILBOX_{host.upper()}_PORT"] = spec["port"]
    return {variable: str(port) for variable, port in ports.items()}


def clean_clone(directory: Path) -> Path:
    clone = directory / "mxgate"
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    (clone / ".venv").symlink_to(REPO / ".venv")
    for dependency in (
        "requirements-dev.txt",
        "layers/core/pyproject.toml",
    ):  # older than the stamp
        os.utime(clone / dependency, (0, 0))
    return clone


class QuickPath:
    def __init__(self, clone: Path, environment: dict[str, str], ports: dict[str, str]) -> None:
        self.clone = clone
        self.environment = environment
        self.ports = ports  # default -> free

    def command(self, line: str) -> str:
        for default, free in self.ports.items():
            line = line.replace(f"127.0.0.1:{default}", f"127.0.0.1:{free}")
        for port in re.findall(r"127\.0\.0\.1:(\d+)", line):
            assert port in self.ports.values(), f"{line}: a port the test cannot move"
        return line

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.command(line)],
            cwd=self.clone,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def quick_path(
    tmp_path: Path,
) -> Iterator[tuple[QuickPath, list[list[str]], subprocess.Popen[str]]]:
    clone = clean_clone(tmp_path)
    blocks = shell_blocks(section((clone / "README.md").read_text()))
    free = {variable: str(free_port()) for variable in default_ports()}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}
    environment |= free
    environment["PYTHONPATH"] = str(clone / "layers" / "core")
    path = QuickPath(clone, environment, {default_ports()[v]: free[v] for v in free})
    start = blocks[0]
    assert len(start) == 1, f"the quick path starts the gateway with one command: {start}"
    output = tmp_path / "gateway.out"
    with output.open("w") as sink:
        gateway = subprocess.Popen(
            ["bash", "-c", path.command(start[0])],
            cwd=clone,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches make and the gateway, as in a terminal
        )
    try:
        wait_for(lambda: STARTED in output.read_text() or gateway.poll() is not None, timeout=120)
        assert gateway.poll() is None, output.read_text()
        yield path, blocks, gateway
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGINT)
            try:
                gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()


def test_the_quick_path_is_on_the_first_screen():
    lines = README.read_text().splitlines()
    start = lines.index(SECTION)
    commands = [line for block in shell_blocks(section(README.read_text())) for line in block]
    last = max(lines.index(command) for command in commands)
    assert start < last < FIRST_SCREEN


def test_the_readme_quick_path_delivers_a_message_and_shows_its_timeline(quick_path):
    path, blocks, gateway = quick_path
    assert (path.clone / ".mxgate-run.json").exists()  # the commands find this gateway
    send, look, trace = blocks[1]

    sent = path.run(send)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    queued = re.search(r"250 2\.0\.0 Ok: queued as (\w+)", sent.stdout)
    assert queued, sent.stdout
    message_id = queued[1]

    # the message lands a moment after the 250: look until it is there, as a reader would
    listing = wait_for(lambda: (r := path.run(look)).returncode == 0 and r.stdout.split(), 60)
    mailbox = path.clone / look.split()[-1]
    delivered = (mailbox / listing[0]).read_bytes().decode()
    assert delivered.startswith(
        "Return-Path: <sender@example.org>\r\nDelivered-To: alice@nutrition.co\r\n"
    )
    assert re.search(r"with ESMTPS id " + message_id, delivered)

    timeline = wait_for(
        lambda: (r := path.run(trace)).returncode == 0 and "delivered (" in r.stdout and r.stdout,
        60,
    )
    assert timeline.startswith(f"message {message_id}\n")
    assert re.search(r"terminal\s+alice@nutrition\.co\s+delivered \(workspace\)", timeline)

    # the stages the README shows are the ones the timeline has, in that order
    after = section((path.clone / "README.md").read_text()).split(trace, 1)[1]
    sample = re.search(r"```\n(.*?)```", after.split("```", 1)[1], re.S)  # past its own block
    assert sample, "the README shows what the trace prints"
    stages = re.compile(r"^\s+\S+\s+\+\S+s\s+(\w+)", re.M)
    assert stages.findall(sample[1]) == stages.findall(timeline)
    assert gateway.poll() is None
