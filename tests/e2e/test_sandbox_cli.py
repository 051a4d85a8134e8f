"""`mxgate sandbox` as a user runs it: `send --json` (the fields the issue names), and the
listening sandbox driven by swaks, a real SMTP client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, SAMPLES, local_config, wait_for

pytestmark = pytest.mark.e2e


def run_mxgate(*args: str, home: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxgate", *args, "--home", str(home), "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_send_prints_each_envelope_recipients_end_as_json(tmp_path: Path) -> None:
    done = run_mxgate(
        "sandbox", "send", str(SAMPLES / "03-split-delivery.eml"),
        "--mail-from", "buyer@shop.example",
        "--rcpt", "alice@nutrition.co", "--rcpt", "carol@nutrition.co",
        "--rcpt", "someone@elsewhere.example",
        "--ip", "203.0.113.9", "--helo", "mx.shop.example", "--json",
        home=tmp_path / "home", config=local_config(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # nothing else on stdout: the functions log to a file
    alice, carol, refused = report["recipients"]
    for delivered, host in ((alice, "workspace"), (carol, "m365")):
        assert {k: delivered[k] for k in ("outcome", "route", "mail_from")} == {
            "outcome": "delivered",
            "route": host,
            "mail_from": "buyer@shop.example",
        }
        assert delivered["rcpt_to"] == [delivered["recipient"]]
        assert Path(delivered["path"]).is_file()
        assert delivered["detail"]
    assert (refused["outcome"], refused["route"], refused["path"]) == ("refused", "", None)
    logs = tmp_path / "home" / "sandbox" / "logs" / "functions.log"
    assert '"function_name":"mxgate-DeliverFunction"' in logs.read_text()


def test_the_listening_sandbox_takes_mail_from_a_real_client(tmp_path: Path) -> None:
    output = tmp_path / "sandbox.out"
    command = [
        sys.executable, "-m", "mxgate", "sandbox",
        "--home", str(tmp_path / "home"), "--config", str(local_config(tmp_path)),
    ]  # fmt: skip
    with output.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
    try:
        wait_for(lambda: "Ctrl-C stops." in output.read_text(), timeout=120)
        port = re.search(r"127\.0\.0\.1:(\d+)  IngressPoint: OPEN", output.read_text())
        assert port is not None, output.read_text()
        swaks = subprocess.run(
            [
                "swaks", "--server", f"127.0.0.1:{port[1]}", "--tls",
                "--from", "sender@example.org", "--to", "bob@nutrition.co",
                "--header", "Subject: from swaks",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert swaks.returncode == 0, swaks.stdout + swaks.stderr
        line = wait_for(
            lambda: re.search(
                r"bob@nutrition\.co  delivered  workspace  (\S+)", output.read_text()
            ),
            timeout=60,
        )
        assert b"Subject: from swaks" in Path(line[1]).read_bytes()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # reaped here, so a hung sandbox fails this test and no other
            process.wait()
            raise AssertionError(
                "Ctrl-C did not stop the sandbox:\n" + output.read_text()
            ) from None
    assert code == 0, output.read_text()
