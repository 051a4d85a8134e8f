"""Local mailbox hosts: SMTP servers standing in for Google Workspace and Microsoft 365.

Each stores what it receives as Maildir under `<root>/<host>/<recipient>/new/`, with
`Return-Path:` and `Delivered-To:` prepended as a delivery agent does, so the envelope the
gateway used can be seen. A file `<root>/<host>/.reply` holding an SMTP reply (for example
`451 4.3.0 try later`) makes the host refuse every recipient with it, and
`<root>/<host>/.reply-<recipient>` refuses one recipient: the failure tests use these to play
an outage or an unknown user without stopping the server. A copy that cannot be stored (a
full disk) is answered `452 4.3.1`, as a provider answers when its storage fails: try later.

`mxgate run` serves them in a process of their own (`serve_hosts`), so their sessions and
file writes never share the ingress's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path

from aiosmtpd.smtp import Envelope, Session

from mxgate.adapters.local.maildir import Maildir, mailbox_name
from mxgate.delivery.smtp import to_crlf
from mxgate.local.smtp import ExactSMTP

# a message this size or under (all its copies) is stored on the loop: its writes into the
# page cache cost less than a hand-off to a thread (the GIL passed back and forth, the loop
# woken from it); a larger one goes to a thread, not to hold up the host's other sessions
STORE_ON_LOOP = 256 * 1024


class MaildirHandler:
    def __init__(self, root: Path, host: str) -> None:
        self.host = host
        self.directory = root / host
        self.directory.mkdir(parents=True, exist_ok=True)
        self.maildir = Maildir(self.directory)

    def forced_reply(self, recipient: str = "") -> str | None:
        """A `.reply-<mailbox>` or `.reply` file's text, read each time: written while the
        host runs, it holds from the next command."""
        names = [f".reply-{mailbox_name(recipient)}"] if recipient else []
        for name in [*names, ".reply"]:
            try:
                return (self.directory / name).read_text(encoding="utf-8").strip() or None
            except FileNotFoundError:
                continue
        return None

    async def handle_EHLO(  # noqa: N802 -- aiosmtpd's hook name
        self,
        server: ExactSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """PIPELINING, as Workspace and 365 offer it (the server answers a group in order)."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(  # noqa: N802 -- aiosmtpd's hook name
        self,
        server: ExactSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        forced = self.forced_reply(address)
        if forced is not None:
            return forced
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: ExactSMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = to_crlf(envelope.original_content or b"")
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        recipients = list(envelope.rcpt_tos)
        try:
            if len(raw) * len(recipients) <= STORE_ON_LOOP:
                self._store_all(sender, recipients, raw)
            else:
                await asyncio.to_thread(self._store_all, sender, recipients, raw)
        except OSError as error:  # a full disk, say: the sender tries again later
            return f"452 4.3.1 Mailbox storage unavailable: {error.strerror or error}"
        return f"250 2.0.0 Ok: delivered to {len(envelope.rcpt_tos)} mailbox(es) on {self.host}"

    def _store_all(self, sender: str, recipients: list[str], raw: bytes) -> list[Path]:
        """Every recipient's copy, or none: one reply covers them all, and a retry after a
        failure must not deliver twice to those stored before it."""
        stored: list[Path] = []
        try:
            for recipient in recipients:
                stored.append(self.maildir.deliver_bytes(sender, recipient, raw))
        except OSError:
            for path in stored:
                path.unlink(missing_ok=True)
            raise
        return stored


def mailbox_session(handler: MaildirHandler) -> ExactSMTP:
    """One SMTP session of a mailbox host: DATA taken exactly, so a long line or a lone dot
    arrives as it was sent."""
    return ExactSMTP(
        handler,
        hostname=f"{handler.host}.mailbox.local",
        enable_SMTPUTF8=True,
        data_size_limit=None,
        ident="mxgate mailbox host",
    )


def serve_hosts(root: Path, hosts: dict[str, int]) -> None:
    """The mailbox hosts in a process of their own (`python -m mxgate.local.mailbox`): each
    listens on its port in `hosts` (0: a free one), the ports taken are printed as one line of
    JSON, and they serve until the process is ended or the gateway that started it is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the gateway decides
    gateway = os.getppid()

    def watch() -> None:
        while os.getppid() == gateway:
            time.sleep(0.5)
        os._exit(0)  # orphaned (the gateway was killed): nothing here is worth keeping

    threading.Thread(target=watch, name="gateway-watch", daemon=True).start()
    asyncio.run(_serve(root, hosts))


async def _serve(root: Path, hosts: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    ports, servers = {}, []
    for host, port in hosts.items():
        server = await loop.create_server(
            partial(mailbox_session, MaildirHandler(root, host)), host="127.0.0.1", port=port
        )
        ports[host] = server.sockets[0].getsockname()[1]
        servers.append(server)
    sys.stdout.write(json.dumps(ports) + "\n")  # what the gateway waits for
    sys.stdout.flush()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    serve_hosts(Path(sys.argv[1]), json.loads(sys.argv[2]))
