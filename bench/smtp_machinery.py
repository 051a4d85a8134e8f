"""What the SMTP machinery costs a message: `ExactSMTP` (ours: the ingress's and the mailbox
hosts' server) and aiosmtpd's `SMTP` (what they ran on before), each with a handler that keeps
nothing, against a bare `asyncio.Protocol` that speaks the same dialogue (HELO or EHLO, MAIL,
RCPT, DATA read by the same `DataAssembler`, QUIT), all in this process, driven by Postfix's
smtp-source over loopback, a connection a message. None spools or runs a policy: what is left
is the server's own cost (docs/benchmarks.md, "An SMTP server of our own (issue 12, session
22)").

    .venv/bin/python bench/smtp_machinery.py [--messages 1000] [--sessions 10] [--size 5120]
"""

from __future__ import annotations

import argparse
import asyncio
import resource

from aiosmtpd.smtp import SMTP
from harness import smtp_source

from mxgate.local.smtp import ExactSMTP
from mxgate.local.smtp_data import DataAssembler

_REPLIES = {
    b"HELO": b"250 mx.test\r\n",
    b"EHLO": b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    b"MAIL": b"250 2.1.0 Sender OK\r\n",
    b"RCPT": b"250 2.1.5 Recipient OK\r\n",
    b"RSET": b"250 2.0.0 OK\r\n",
    b"NOOP": b"250 2.0.0 OK\r\n",
}


class KeepNothing:
    """The handler: every message answered 250 and dropped."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        return "250 2.0.0 Ok"


class Dropped:
    def write(self, data: bytes, /) -> None:
        pass

    def discard(self) -> None:
        pass


class BareSMTP(asyncio.Protocol):
    """Lines parsed in data_received and answered at once: no task, no stream reader."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending = b""
        self.data: DataAssembler | None = None
        transport.write(b"220 mx.test ESMTP\r\n")

    def data_received(self, chunk: bytes) -> None:
        if self.data is not None:
            end = self.data.feed(chunk)
            if end is None:
                return
            self.data = None
            self.transport.write(b"250 2.0.0 Ok\r\n")
            chunk = chunk[end:]
        self.pending += chunk
        while (line_end := self.pending.find(b"\r\n")) >= 0:
            verb = self.pending[:4].upper()
            self.pending = self.pending[line_end + 2 :]
            if verb == b"DATA":
                self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.data = DataAssembler(None, Dropped())
                rest, self.pending = self.pending, b""
                if rest:
                    self.data_received(rest)
                return
            if verb == b"QUIT":
                self.transport.write(b"221 2.0.0 Bye\r\n")
                self.transport.close()
                return
            self.transport.write(_REPLIES.get(verb, b"500 5.5.2 Error: bad syntax\r\n"))


async def cpu_a_message(server: str, args: argparse.Namespace) -> float:
    loop = asyncio.get_running_loop()
    factories = {
        "ours": lambda: ExactSMTP(KeepNothing(), hostname="mx.test"),
        "aiosmtpd": lambda: SMTP(KeepNothing(), hostname="mx.test"),
        "bare": BareSMTP,
    }
    factory = factories[server]
    listening = await loop.create_server(factory, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    await asyncio.to_thread(smtp_source, port, 50, args.sessions, args.size)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.to_thread(smtp_source, port, args.messages, args.sessions, args.size)
    after = resource.getrusage(resource.RUSAGE_SELF)
    listening.close()
    await listening.wait_closed()
    spent = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return spent / args.messages * 1000


async def run(args: argparse.Namespace) -> None:
    figures: dict[str, list[float]] = {"ours": [], "aiosmtpd": [], "bare": []}
    for _ in range(args.runs):  # the two take turns: the machine's load moves both alike
        for server, found in figures.items():
            found.append(await cpu_a_message(server, args))
    for server, found in figures.items():
        shown = ", ".join(f"{ms:.2f}" for ms in found)
        print(f"  {server:9} CPU a message: {shown} ms")
    bare = sum(figures["bare"])
    print(f"  ExactSMTP / bare asyncio.Protocol: {sum(figures['ours']) / bare:.2f}x")
    print(f"  aiosmtpd's SMTP / bare asyncio.Protocol: {sum(figures['aiosmtpd']) / bare:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--runs", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
