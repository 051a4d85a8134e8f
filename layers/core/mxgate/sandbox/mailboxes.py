"""The sandbox's mailbox hosts: the local Maildir hosts (mxgate.local.mailbox), standing in for
Google Workspace and Microsoft 365, that also add the Received field a provider's MX adds and
keep a record of each delivery (the envelope they saw, the peer, the stored file), which is
what `mxgate sandbox send` reports."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import Envelope, Session

from mxgate.clock import SystemClock
from mxgate.delivery.smtp import to_crlf
from mxgate.ids import new_message_id
from mxgate.local.ingress import tls_protocol
from mxgate.local.mailbox import STORE_ON_LOOP, MaildirHandler
from mxgate.local.smtp import ExactSMTP, peer_ip
from mxgate.message.headers import prepend_headers
from mxgate.message.received import received_value


@dataclass(frozen=True)
class MailboxDelivery:
    """What one mailbox host received for one recipient."""

    host: str
    mail_from: str
    rcpt_to: tuple[str, ...]  # every RCPT TO of the session's transaction
    recipient: str
    path: Path
    peer_ip: str  # who connected: the last hop, as the provider sees it
    helo: str


class RecordingMaildir(MaildirHandler):
    def __init__(self, root: Path, host: str) -> None:
        super().__init__(root, host)
        self.hostname = f"{host}.mailbox.local"
        self.deliveries: list[MailboxDelivery] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: ExactSMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        recipients = tuple(envelope.rcpt_tos)
        peer, helo = peer_ip(session), session.host_name or ""
        received = received_value(
            helo=helo,
            ip=peer,
            by=self.hostname,
            message_id=new_message_id(SystemClock().now()),
            when=SystemClock().now(),
            tls_protocol=tls_protocol(session),
        )
        raw = prepend_headers(to_crlf(envelope.original_content or b""), [("Received", received)])
        if len(raw) * len(recipients) <= STORE_ON_LOOP:  # as the hosts of `mxgate run` do
            self._keep(sender, recipients, raw, peer, helo)
        else:
            await asyncio.to_thread(self._keep, sender, recipients, raw, peer, helo)
        return f"250 2.0.0 Ok: delivered to {len(recipients)} mailbox(es) on {self.host}"

    def _keep(
        self, sender: str, recipients: tuple[str, ...], raw: bytes, peer: str, helo: str
    ) -> None:
        paths = self._store_all(sender, list(recipients), raw)
        with self._lock:
            self.deliveries += [
                MailboxDelivery(self.host, sender, recipients, recipient, path, peer, helo)
                for recipient, path in zip(recipients, paths, strict=True)
            ]
