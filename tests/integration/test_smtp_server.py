"""The gateway's own SMTP server (`ExactSMTP`) answers as aiosmtpd's `SMTP`, which it replaced:
the same dialogues sent to both on loopback get the same replies, but for the enhanced status
codes (RFC 3463, RFC 5248's registry) the gateway adds to every reply after the greeting and
EHLO / HELO's (RFC 2034: it says ENHANCEDSTATUSCODES), and for a failure of its own, a 451
rather than aiosmtpd's 500. Pipelined groups are answered in order, whatever the network does
to them."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiosmtpd.smtp import MISSING, SMTP

from mxgate.local.smtp import ExactSMTP

# aiosmtpd's replies, as the gateway gives them (with their enhanced status codes)
ENHANCED = {
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "501 Syntax: EHLO hostname": "501 5.5.4 Syntax: EHLO hostname",
    "501 Syntax: HELO hostname": "501 5.5.4 Syntax: HELO hostname",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
    "501 Syntax: DATA": "501 5.5.4 Syntax: DATA",  # ExactSMTP's own DATA said it so already
    "221 Bye": "221 2.0.0 Bye",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
}
# the start of an aiosmtpd reply, and what the gateway's starts with instead
ENHANCED_START = (
    ("500 Error: (", "451 4.3.0 Error: ("),  # the server's own failure: try again later
    ("500 Error: command ", "500 5.5.1 Error: command "),
    ("500 Error: ", "500 5.5.2 Error: "),
    ("501 ", "501 5.5.4 "),
    ("502 ", "502 5.5.1 "),
    ("503 ", "503 5.5.1 "),
    ("555 ", "555 5.5.4 "),
    ("252 ", "252 2.0.0 "),
    ("250 Syntax: ", "250 2.0.0 Syntax: "),
    ("250 Supported commands: ", "250 2.0.0 Supported commands: "),
)
# aiosmtpd's "250 OK" after each command
ENHANCED_OK = {"MAIL": "250 2.1.0 OK", "RCPT": "250 2.1.5 OK"}
HAS_CODE = re.compile(r"[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")


def enhanced(command: bytes, reply: str) -> str:
    """aiosmtpd's reply to `command` as the gateway gives it."""
    if reply.startswith("250-") and "250-ENHANCEDSTATUSCODES" not in reply:
        return reply.replace("250-8BITMIME\n", "250-8BITMIME\n250-ENHANCEDSTATUSCODES\n")
    if "\n" in reply or HAS_CODE.match(reply):
        return reply
    if reply == "250 OK":
        return ENHANCED_OK.get(
            command.split(b" ")[0].upper().decode(errors="replace"), "250 2.0.0 OK"
        )
    reply = ENHANCED.get(reply, reply)
    for old, new in ENHANCED_START:
        if reply.startswith(old) and not HAS_CODE.match(reply):
            return new + reply.removeprefix(old)
    return reply


DIALOGUES = {
    "before HELO": [b"MAIL FROM:<a@b.test>", b"RCPT TO:<c@d.test>", b"DATA", b"NOOP", b"RSET"],
    "HELO and EHLO": [b"HELO", b"EHLO", b"EHLO   ", b"HELO client.test", b"EHLO client.test"],
    "MAIL": [
        b"EHLO client.test",
        b"MAIL",
        b"MAIL TO:<a@b.test>",
        b"MAIL FROM:",
        b"MAIL FROM:<>",
        b"RSET",
        b"MAIL FROM:<a@b.test> SIZE=x",
        b"MAIL FROM:<a@b.test> SIZE=99999999999",
        b"MAIL FROM:<a@b.test> BODY=9BIT",
        b"MAIL FROM:<a@b.test> SMTPUTF8=yes",
        b"MAIL FROM:<a@b.test> FOO=bar",
        b"MAIL FROM:<a@b.test> =x",
        b"MAIL FROM:<not an address",
        b'MAIL FROM:<"quoted local"@b.test> BODY=8BITMIME SIZE=100',
        b"MAIL FROM:<a@b.test>",
        b"RCPT TO:<c@d.test> NOTIFY=NEVER",
        b"RCPT",
        b"RCPT TO:<c@d.test>",
        b"RCPT TO:(comment) <e@d.test>",
        b"RCPT TO:<boom@d.test>",
        b"DATA extra",
    ],
    "HELO forbids parameters": [
        b"HELO c.test",
        b"MAIL FROM:<a@b.test> SIZE=10",
        b"RCPT TO:<c@d.test>",
    ],
    "odd lines": [
        b"",
        b"   ",
        b"\xff\xfe NOOP",
        b"NOOP " + b"x" * 600,
        b"NOOP " + b"x" * 2000,
        b"FOO bar",
        b"NOOP anything",
        b"RSET now",
        b"QUIT now",
        b"EXPN list",
        b"VRFY",
        b"VRFY <a@b.test>",
        b"VRFY <<<",
        b"HELP",
        b"HELP MAIL",
        b"HELP NOSUCH",
        b"EHLO c.test",
        b"HELP MAIL",
        b"AUTH PLAIN",
        b"STARTTLS",
        b"STARTTLS now",
    ],
    "too many unknown commands": [b"ONE", b"TWO", b"THREE", b"FOUR", b"FIVE", b"SIX"],
    "a transaction": [
        b"EHLO c.test",
        b"MAIL FROM:<a@b.test>",
        b"MAIL FROM:<a@b.test>",
        b"RCPT TO:<c@d.test>",
        b"DATA",
        b"Subject: hi\r\n\r\n..dotted\r\n.",
        b"RCPT TO:<c@d.test>",
        b"RSET",
        b"QUIT",
    ],
}


class KeepsNothing:
    """A handler with no hooks: the server's own replies only."""


class Waits:
    """A handler whose hooks wait (so the commands go on in a task) and then leave the reply
    to the server; a recipient `boom@...` makes its hook fail."""

    async def handle_MAIL(self, server, session, envelope, address, options):
        await asyncio.sleep(0.001)
        return MISSING

    async def handle_RCPT(self, server, session, envelope, address, options):
        await asyncio.sleep(0)
        if address.startswith("boom@"):
            raise ValueError("boom")
        return MISSING

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.001)
        return f"250 2.0.0 {len(envelope.content)} bytes"


async def replies_of(
    port: int, dialogue: list[bytes], pipelined: bool, as_the_gateway: bool = False
) -> list[str]:
    """The greeting and the replies to `dialogue`: a line at a time, each reply read before
    the next line is sent, or (`pipelined`) the commands up to DATA in one write and the
    message with the commands after it in another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = [await read_reply(reader)]
    lines = [line + b"\r\n" for line in dialogue]
    split = next((i for i, line in enumerate(lines) if line.startswith(b"Subject")), len(lines))
    groups = [lines[:split], lines[split:]] if pipelined else [[line] for line in lines]
    for group in groups:
        writer.write(b"".join(group))
        for line in group:
            reply = await read_reply(reader)
            answers.append(enhanced(line, reply) if as_the_gateway else reply)
            if not answers[-1]:
                writer.close()
                return answers
    writer.close()
    return answers


async def read_reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            break
        lines.append(line.decode().rstrip("\r\n"))
        if line[3:4] != b"-":
            break
    return "\n".join(lines)


def dialogue_with(
    server: type, dialogue: list[bytes], pipelined: bool, handler: type = KeepsNothing
) -> list[str]:
    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        listening = await loop.create_server(
            lambda: server(handler(), hostname="mx.test", ident="ESMTP", data_size_limit=1000),
            "127.0.0.1",
            0,
        )
        try:
            port = listening.sockets[0].getsockname()[1]
            return await replies_of(port, dialogue, pipelined, as_the_gateway=server is SMTP)
        finally:
            listening.close()

    return asyncio.run(run())


@pytest.mark.parametrize("name", DIALOGUES)
def test_the_replies_are_aiosmtpds(name):
    dialogue = DIALOGUES[name]
    assert dialogue_with(ExactSMTP, dialogue, False) == dialogue_with(SMTP, dialogue, False)


@pytest.mark.parametrize("name", ["MAIL", "a transaction", "odd lines"])
def test_a_pipelined_group_is_answered_in_order(name):
    dialogue = DIALOGUES[name]
    assert dialogue_with(ExactSMTP, dialogue, True) == dialogue_with(SMTP, dialogue, False)


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("name", ["MAIL", "a transaction"])
def test_hooks_that_wait_are_answered_in_order(name, pipelined):
    dialogue = DIALOGUES[name]
    ours = dialogue_with(ExactSMTP, dialogue, pipelined, Waits)
    assert ours == dialogue_with(SMTP, dialogue, False, Waits)
    assert "451 4.3.0 Error: (ValueError) boom" in ours or name != "MAIL"


def test_commands_sent_while_one_waits_are_held_and_all_answered():
    """A client that pipelines far past what the session holds while a command waits: the
    session stops reading, then reads on, and answers every line in order."""
    noops = [b"NOOP"] * 30_000  # 180 KB: nearly three times what a session holds
    dialogue = [b"EHLO c.test", b"MAIL FROM:<a@b.test>", *noops, b"QUIT"]
    answers = dialogue_with(ExactSMTP, dialogue, True, Waits)
    assert answers[2] == "250 2.1.0 OK"
    assert answers[3:-1] == ["250 2.0.0 OK"] * len(noops)
    assert answers[-1] == "221 2.0.0 Bye"
