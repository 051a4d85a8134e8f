"""What `mxgate run` prints once it listens, where its errors are kept, and its hop log."""

from __future__ import annotations

import json
import logging
import time

import pytest

from mxgate.cli.run import banner
from mxgate.local.server import Running
from mxgate.local.settings import LocalSettings
from mxgate.local.setup import LocalSetup, load_setup
from mxgate.observability import ErrorLogHandler, configure_logging, hop
from tests.support import REPO, fill, local_config, small_filesystem


def setup_with_an_external_host(tmp_path) -> LocalSetup:
    config = local_config(
        tmp_path,
        mailbox_hosts={
            "workspace": {"port": 0},
            "m365": {"port": 2600, "external": True, "description": "my own Postfix"},
            "internet": {"port": 0},
        },
    )
    return load_setup(LocalSettings(home=tmp_path / "home", config=config))


def running() -> Running:
    return Running(
        smtp=("127.0.0.1", 2525),
        mailbox_hosts={"workspace": 2526, "m365": 2600, "internet": 2528},
        ingress={
            "IngressPoint": ("127.0.0.1", 2525),
            "SubmissionIngressPoint": ("127.0.0.1", 2587),
            "RelayIngressPoint": ("127.0.0.1", 2588),
        },
    )


def test_an_external_mailbox_host_has_no_maildir_line(tmp_path):
    lines = banner(setup_with_an_external_host(tmp_path), running(), ".mxgate").splitlines()
    hosts = [line for line in lines if line.startswith("  mailbox host")]
    assert hosts == [
        "  mailbox host   workspace  127.0.0.1:2526  -> .mxgate/mailboxes/workspace/<recipient>/new/",
        (
            "  mailbox host   m365       127.0.0.1:2600  external: delivered to what listens there "
            "(not started by mxgate)"
        ),
        "  mailbox host   internet   127.0.0.1:2528  -> .mxgate/mailboxes/internet/<recipient>/new/",
    ]
    assert (
        "  logs           .mxgate/logs/ (errors and tracebacks: .mxgate/logs/errors.log)" in lines
    )


def test_the_trace_line_names_the_home_only_when_commands_cannot_find_it(tmp_path):
    setup = setup_with_an_external_host(tmp_path)
    found = banner(setup, running(), "/srv/mx", found_here=True)
    assert any(line.endswith(" trace") for line in found.splitlines())
    elsewhere = banner(setup, running(), "/srv/mx", found_here=False)
    assert any(line.endswith(" trace --home /srv/mx") for line in elsewhere.splitlines())


def test_warnings_errors_and_tracebacks_go_to_the_error_log(tmp_path):
    error_log = tmp_path / "logs" / "errors.log"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", error_log)
    log = logging.getLogger("mxgate.test")
    try:
        assert error_log.read_text() == ""  # there from the start, before anything is logged
        log.info("not kept in the file")
        try:
            raise RuntimeError("a worker broke")
        except RuntimeError:
            log.exception("worker failed", extra={"work": "01M8.msg"})
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers  # pytest's own, as they were
        root.setLevel(level)
    kept = error_log.read_text()
    assert "not kept" not in kept
    (entry,) = [json.loads(line) for line in kept.splitlines()]  # one JSON object a line
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "ERROR",
        "mxgate.test",
        "worker failed",
    )
    assert entry["work"] == "01M8.msg"  # the record's fields, as on the terminal
    assert entry["error"]["type"] == "RuntimeError"
    assert entry["error"]["message"] == "a worker broke"
    assert entry["error"]["traceback"].startswith("Traceback (most recent call last):")


def test_an_error_log_that_cannot_be_written_drops_records_and_says_so_once(tmp_path, capsys):
    """A full disk: the terminal keeps every record; the file catches up when it can."""
    with small_filesystem(tmp_path / "fs", "1m") as disk:
        handler = ErrorLogHandler(disk / "errors.log")
        log = logging.getLogger("mxgate.test.full")
        log.addHandler(handler)
        log.propagate = False
        try:
            filler = fill(disk)
            for n in range(3):
                log.error("while full", extra={"n": n, "bad": "\udcff"})  # no UTF-8: still one line
            said = capsys.readouterr().err
            assert said.count("errors.log not written for now (No space left on device)") == 1
            filler.unlink()
            log.error("after", extra={"bad": "\udcff"})
        finally:
            log.removeHandler(handler)
            handler.close()
        (entry,) = [json.loads(line) for line in (disk / "errors.log").read_text().splitlines()]
        assert (entry["message"], entry["bad"]) == ("after", "\udcff")


def test_the_banner_in_the_docs_is_the_one_make_run_prints(monkeypatch):
    """docs/mail-manager.md shows the banner of the shipped configuration on its default ports,
    as printed from a shell where mxgate is not on PATH."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("mxgate.cli.run.command_name", lambda: ".venv/bin/mxgate")
    setup = load_setup(LocalSettings())
    ports = {x.ingress_id: ("127.0.0.1", x.port) for x in setup.listeners}
    shipped = Running(
        smtp=ports[setup.primary.ingress_id],
        mailbox_hosts={name: host.port for name, host in setup.config.mailbox_hosts.items()},
        ingress=ports,
    )
    text = (REPO / "docs" / "mail-manager.md").read_text()
    shown = text.split("`make run` prints what it listens on and a ready command:\n\n```\n", 1)[1]
    assert shown.split("```", 1)[0] == banner(setup, shipped, ".mxgate") + "\n"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("asked", [True, False])
def test_a_messages_hops_are_logged_only_when_asked_for(asked: bool) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kept = Kept()
    configure_logging("INFO", latency=asked)
    root.addHandler(kept)
    try:
        before = time.time()
        hop("durable", message_id="01M8")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("mxgate.latency").setLevel(logging.NOTSET)
    if not asked:
        assert kept.records == []
        return
    (record,) = kept.records  # at DEBUG, under a root at INFO
    assert (record.name, record.levelno) == ("mxgate.latency", logging.DEBUG)
    assert (record.stage, record.message_id) == ("durable", "01M8")  # type: ignore[attr-defined]
    assert before <= float(record.at) <= time.time()  # type: ignore[attr-defined]
