"""Local mailbox hosts: SMTP servers standing in for Google Workspace and Microsoft 365.

Each stores what it receives as Maildir under `<root>/<host>/<recipient>/new/`, with
`Return-Path:` and `Delivered-To:` prepended as a delivery agent does, so the envelope the
gateway used can be seen. A file `<root>/<host>/.reply` holding an SMTP reply (for example
`451 4.3.0 try later`) makes the host refuse every recipient with it, and
`<root>/<host>/.reply-<recipient>` refuses one recipient: the failure tests use these to play
an outage or an unknown user without stopping the server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from mxgate.adapters.local.files import safe_name
from mxgate.adapters.local.maildir import Maildir
from mxgate.delivery.smtp import to_crlf


class MaildirHandler:
    def __init__(self, root: Path, host: str) -> None:
        self.host = host
        self.directory = root / host
        self.directory.mkdir(parents=True, exist_ok=True)
        self.maildir = Maildir(self.directory)

    def forced_reply(self, recipient: str = "") -> str | None:
        names = [f".reply-{safe_name(recipient.casefold())}"] if recipient else []
        for name in [*names, ".reply"]:
            try:
                return (self.directory / name).read_text(encoding="utf-8").strip() or None
            except FileNotFoundError:
                continue
        return None

    async def handle_EHLO(  # noqa: N802 -- aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """PIPELINING, as Workspace and 365 offer it (aiosmtpd reads commands in order)."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(  # noqa: N802 -- aiosmtpd's hook name
        self,
        server: SMTP,
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

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = to_crlf(envelope.original_content or b"")
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        recipients = list(envelope.rcpt_tos)
        await asyncio.to_thread(self._store_all, sender, recipients, raw)  # file I/O off the loop
        return f"250 2.0.0 Ok: delivered to {len(envelope.rcpt_tos)} mailbox(es) on {self.host}"

    def _store_all(self, sender: str, recipients: list[str], raw: bytes) -> list[Path]:
        return [self.maildir.deliver(sender, recipient, raw) for recipient in recipients]


def mailbox_session(handler: MaildirHandler) -> SMTP:
    """One SMTP session of a mailbox host."""
    return SMTP(
        handler,
        hostname=f"{handler.host}.mailbox.local",
        enable_SMTPUTF8=True,
        data_size_limit=None,
        ident="mxgate mailbox host",
    )
