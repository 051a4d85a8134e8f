"""`mxgate demo`: a fresh gateway, the sample messages through real SMTP, their outcomes checked."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mxgate.adapters.local.maildir import Maildir
from mxgate.adapters.local.state import SqliteState
from mxgate.cli import COMMANDS
from mxgate.cli.common import add_settings_arguments, print_json, settings_from, table
from mxgate.cli.demo_traffic import DemoMessage, demo_traffic
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.server import Gateway
from mxgate.local.setup import LocalSetup, load_setup
from mxgate.message.parse import header_values, parse_header_section
from mxgate.observability import configure_logging

REJECTED = "rejected"  # refused at RCPT time: never accepted
ANY = "*"  # the expectation of generated traffic: any terminal state


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: str
    route: str | None = None


class Sample(BaseModel):
    """`<name>.expected.json` beside `<name>.eml`: the envelope and what must happen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    mail_from: str
    recipients: dict[str, Expectation]


@dataclass
class Row:
    sample: str
    recipient: str
    route: str
    outcome: str
    landed: str
    expected: Expectation

    subject: str = ""

    @property
    def ok(self) -> bool:
        if self.expected.outcome == ANY:
            return self.outcome != "not settled"
        return self.outcome == self.expected.outcome and (
            self.expected.route is None or self.route == self.expected.route
        )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help=COMMANDS["demo"].help,
        description="Start a gateway on free loopback ports with its state under HOME/demo, send "
        "each events/mail/*.eml with the envelope from its .expected.json over SMTP (STARTTLS), "
        "wait until every recipient reaches its terminal state, and print where each landed. "
        "Exits 0 only if every outcome is the expected one.",
    )
    add_settings_arguments(parser)
    parser.add_argument(
        "--samples",
        type=Path,
        default=Path("events/mail"),
        help="directory of sample .eml files (default events/mail)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for every outcome (default 60)"
    )
    parser.add_argument(
        "--traffic",
        type=int,
        default=0,
        metavar="N",
        help="after the samples, send N generated messages (a day of mixed traffic, for "
        "`mxgate rules replay`)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="the generated traffic's seed (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=demo)


def load_samples(directory: Path) -> list[tuple[Path, Sample]]:
    samples = []
    for eml in sorted(directory.glob("*.eml")):
        expected = eml.with_suffix(".expected.json")
        if not expected.exists():
            raise ConfigError(f"{eml}: no {expected.name} beside it")
        samples.append((eml, Sample.model_validate_json(expected.read_text(encoding="utf-8"))))
    if not samples:
        raise ConfigError(f"no sample messages (*.eml) in {directory}")
    return samples


Sent = tuple[str | None, dict[str, str]]  # the gateway's message id (None: none), refusals


def _session(port: int) -> smtplib.SMTP:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the demo gateway's certificate is self-signed
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.starttls(context=context)
    client.ehlo("demo.mxgate.local")
    return client


def _transaction(
    client: smtplib.SMTP, mail_from: str, recipients: Sequence[str], raw: bytes
) -> Sent:
    client.mail(mail_from)
    refused = {}
    for recipient in recipients:
        code, reply = client.rcpt(recipient)
        if code >= 400:
            refused[recipient] = f"{code} {reply.decode(errors='replace')}"
    if len(refused) == len(recipients):
        client.rset()
        return None, refused
    code, reply = client.data(raw)
    text = reply.decode(errors="replace")
    if code != 250:  # refused after DATA: every recipient, with the reply
        return None, {r: refused.get(r, f"{code} {text}") for r in recipients}
    return text.rsplit(" ", 1)[-1], refused


def send(port: int, mail_from: str, recipients: Sequence[str], raw: bytes) -> Sent:
    """Send over SMTP with STARTTLS; the gateway's id from `250 ... queued as ID`, and refusals."""
    with _session(port) as client:
        return _transaction(client, mail_from, recipients, raw)


def send_all(port: int, messages: Sequence[DemoMessage]) -> list[Sent]:
    """Many messages through one session, as a busy sending MTA does."""
    with _session(port) as client:
        return [_transaction(client, m.mail_from, m.recipients, m.raw) for m in messages]


def landed(setup: LocalSetup, recipient: str, route: str, detail: str, message_id: str) -> str:
    copy = Maildir(setup.dirs.mailboxes / route).find(recipient, message_id.encode())
    if copy is not None:
        return _shown(copy)
    if detail.startswith("/") and Path(detail).exists():  # an application event file
        return _shown(Path(detail))
    return detail


def _subject(raw: bytes) -> str:
    return next(iter(header_values(parse_header_section(raw), "subject")), "")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def _settled_rows(
    setup: LocalSetup,
    state: SqliteState,
    *,
    label: str,
    message_id: str,
    expected: Mapping[str, Expectation],
    deadline: float,
    subject: str = "",
) -> list[Row]:
    """Wait (until `deadline`) for the accepted recipients' terminal states; a row for each."""
    settled = {}
    while time.monotonic() < deadline:
        settled = {s.recipient.casefold(): s for s in state.states(message_id)}
        if all(r.casefold() in settled for r in expected):
            break
        await asyncio.sleep(0.05)
    rows = []
    for recipient, expectation in expected.items():
        found = settled.get(recipient.casefold())
        if found is None:
            rows.append(Row(label, recipient, "?", "not settled", "in time", expectation, subject))
            continue
        where = landed(setup, recipient, found.route, found.detail, message_id)
        rows.append(
            Row(label, recipient, found.route, found.outcome.value, where, expectation, subject)
        )
    return rows


async def run_demo(
    bootstrap: Bootstrap,
    samples: list[tuple[Path, Sample]],
    timeout: float,
    traffic: Sequence[DemoMessage] = (),
) -> list[Row]:
    setup = bootstrap.setup
    gateway = Gateway(bootstrap)
    running = await gateway.start()
    state = bootstrap.state()
    rows: list[Row] = []
    port = running.smtp[1]
    try:
        for eml, sample in samples:
            message_id, refused = await asyncio.to_thread(
                send, port, sample.mail_from, list(sample.recipients), eml.read_bytes()
            )
            for recipient, reply in refused.items():
                rows.append(
                    Row(eml.stem, recipient, "-", REJECTED, reply, sample.recipients[recipient])
                )
            if message_id is None:
                continue
            expected = {r: e for r, e in sample.recipients.items() if r not in refused}
            deadline = time.monotonic() + timeout
            rows += await _settled_rows(
                setup,
                state,
                label=eml.stem,
                message_id=message_id,
                expected=expected,
                deadline=deadline,
                subject=_subject(eml.read_bytes()),
            )
        # generated traffic: all sent first, then waited for, as a day's mail arrives
        sent = []
        anything = Expectation(outcome=ANY)
        results = await asyncio.to_thread(send_all, port, traffic) if traffic else []
        for number, (message, (message_id, refused)) in enumerate(
            zip(traffic, results, strict=True), start=1
        ):
            label = f"traffic-{number:04d}"
            for recipient, reply in refused.items():
                rows.append(Row(label, recipient, "-", REJECTED, reply, anything, message.subject))
            if message_id is not None:
                expected = {r: anything for r in message.recipients if r not in refused}
                sent.append((label, message_id, expected, message.subject))
        deadline = time.monotonic() + timeout
        for label, message_id, expected, subject in sent:
            rows += await _settled_rows(
                setup,
                state,
                label=label,
                message_id=message_id,
                expected=expected,
                deadline=deadline,
                subject=subject,
            )
    finally:
        await gateway.stop(running)
    return rows


def demo(args: argparse.Namespace) -> int:
    base = settings_from(args)
    home = base.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    settings = base.model_copy(
        update={"home": home, "smtp_port": 0, "retry_scale": 0.01, "log_level": "WARNING"}
    )
    configure_logging("WARNING")
    setup = load_setup(settings)
    free_ports = {
        name: host.model_copy(update={"port": 0})
        for name, host in setup.config.mailbox_hosts.items()
    }
    setup = replace(
        setup,
        config=setup.config.model_copy(update={"mailbox_hosts": free_ports}),
        listeners=tuple(replace(listener, port=0) for listener in setup.listeners),
    )
    samples = load_samples(args.samples)
    traffic = demo_traffic(args.traffic, args.seed, setup.routes) if args.traffic > 0 else []
    bootstrap = Bootstrap(settings, given_setup=setup)
    rows = asyncio.run(run_demo(bootstrap, samples, args.timeout, traffic))
    if args.json:
        print_json(
            {
                "ok": all(r.ok for r in rows),
                "rows": [
                    {
                        "message": r.sample,
                        "recipient": r.recipient,
                        "route": r.route,
                        "outcome": r.outcome,
                        "landed": r.landed,
                        "expected": r.expected.model_dump(),
                        "subject": r.subject,
                        "ok": r.ok,
                    }
                    for r in rows
                ],
            }
        )
    else:
        print(
            table(
                [
                    [
                        r.sample,
                        r.recipient,
                        r.route,
                        r.outcome,
                        r.landed,
                        "ok"
                        if r.ok
                        else f"EXPECTED {r.expected.outcome}"
                        + (f" via {r.expected.route}" if r.expected.route else ""),
                    ]
                    for r in rows
                ],
                ["MESSAGE", "RECIPIENT", "ROUTE", "OUTCOME", "LANDED", "CHECK"],
            )
        )
        failed = sum(not r.ok for r in rows)
        print(
            f"\n{len(rows) - failed} of {len(rows)} recipients reached their expected outcome"
            + (f"; {failed} did not" if failed else "")
            + f" (state: {home})"
        )
    return 0 if all(r.ok for r in rows) else 1
