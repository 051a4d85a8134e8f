"""Delivery through Mail Manager itself (routes `transport: mail_manager`): SMTP submission
(port 587, STARTTLS, then AUTH as the ingress point's id) into the stack's relay ingress point,
an AUTH ingress point whose own rule set relays, with MailFrom PRESERVE, to the Workspace or
365 relay named by the X-Mxgate-Relay field. The envelope sender, the From field and every DKIM
signature arrive as they left the sender: the field is prepended, never signed over, and any
copy the sender wrote is removed first (it would steer the rule set).

Lambda cannot open port 25; 587 is open to it, and AUTH ingress points accept 587.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mxgate.delivery.smtp import SmtpTarget, SmtpTransport, everyone_failed
from mxgate.errors import FailureKind, MxgateError, kind_of
from mxgate.message.headers import prepend_headers, remove_fields
from mxgate.message.raw import RawMessage
from mxgate.ports import SendResult

RELAY_FIELD = "X-Mxgate-Relay"  # the relay ingress point's rule set routes on it
SUBMISSION_PORT = 587


@dataclass(frozen=True)
class RelayIngress:
    """Where the relay ingress point listens and how to log in (the password comes on first
    use: on AWS it is read from Secrets Manager, never at import)."""

    host: str
    user: str
    password: Callable[[], str]
    port: int = SUBMISSION_PORT
    ca_file: str | None = None
    helo: str = "mxgate"


class RelayIngressTransport:
    """The Transport of one `mail_manager` destination."""

    requires_verified_sender = False  # Mail Manager relays with the sender's own MAIL FROM
    max_message_bytes: int | None = None

    def __init__(self, ingress: RelayIngress, relay: str) -> None:
        self.ingress = ingress
        self.relay = relay
        self._smtp: SmtpTransport | None = None

    def _transport(self) -> SmtpTransport:
        if self._smtp is None:
            ingress = self.ingress
            target = SmtpTarget(
                ingress.host,
                ingress.port,
                starttls=True,  # never AUTH in the clear
                verify_tls=True,
                username=ingress.user,
                password=ingress.password(),
                helo=ingress.helo,
                ca_file=ingress.ca_file,
            )
            self._smtp = SmtpTransport(target)
        return self._smtp

    def send(
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: RawMessage,
        tags: Mapping[str, str] | None = None,  # SMTP carries no tags to a later report
    ) -> Mapping[str, SendResult]:
        header = remove_fields(raw.header, RELAY_FIELD)
        message = raw.with_header(prepend_headers(header, [(RELAY_FIELD, self.relay)]))
        try:
            transport = self._transport()
        except MxgateError as error:  # the password could not be had
            transient = kind_of(error) is FailureKind.TRANSIENT
            return everyone_failed(recipients, transient=transient, detail=str(error))
        return transport.send(envelope_sender, recipients, message)

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
