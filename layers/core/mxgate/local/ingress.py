"""The SMTP ingress: Mail Manager's ingress point on loopback.

The template's traffic policy decides each RCPT; the message is fsynced to the spool before
`250` is answered, then handed to the workers that run the rule set and the workflow.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import ssl
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from pathlib import Path

from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword, Session, TLSSetupException
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mxgate.errors import SMTP_REPLY, FailureKind
from mxgate.ids import new_message_id
from mxgate.local.addons import SessionAddons
from mxgate.local.limits import Defences
from mxgate.local.logs import INGRESS, TRAFFIC_POLICY, VendedLogs
from mxgate.local.smtp import ExactSMTP, IngressSMTP, peer_ip
from mxgate.local.spool import Spool, SpoolWriter
from mxgate.mailmanager.addons import AddonResult, statement_analyzers
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.models import IngressPoint, TrafficPolicy
from mxgate.mailmanager.traffic import TrafficDecision, TrafficVerdict, evaluate_traffic_policy
from mxgate.observability import hop
from mxgate.ports import Clock
from mxgate.records import Envelope

log = logging.getLogger("mxgate.ingress")

MAX_RECIPIENTS = 100  # Mail Manager's limit per message
# Messages of an ingress point received at once, each streamed to its spool file through a
# write buffer (`spool.WRITE_BUFFER`). A session beyond them waits before its 354 (it is not
# refused), so the ingress's memory is bounded whatever the number of sessions or the message
# size (docs/benchmarks.md, "Concurrency and memory").
MESSAGES_IN_MEMORY = 32
_TLS_NAMES = {"TLSv1": "TLS1_0", "TLSv1.1": "TLS1_1", "TLSv1.2": "TLS1_2", "TLSv1.3": "TLS1_3"}


def ingress_session(
    handler: IngressHandler,
    hostname: str,
    tls: ssl.SSLContext,
    max_message_size: int | None,
    defences: Defences,
) -> IngressSMTP:
    """One SMTP session of an ingress point: STARTTLS as its TlsPolicy says; an AUTH ingress
    point requires AUTH, offered only after STARTTLS; the limits `defences` count across
    every session of every ingress point."""
    auth = handler.ingress.Type == "AUTH"
    return IngressSMTP(
        handler,
        gate=defences.gate,
        guard=defences.guard,
        data_slots=handler.data_slots,
        timeout=defences.limits.idle_timeout,
        data_timeout=defences.limits.data_timeout,
        hostname=hostname,
        ident="mxgate ESMTP",
        tls_context=tls,
        require_starttls=handler.ingress.requires_starttls,
        data_size_limit=max_message_size,
        enable_SMTPUTF8=True,
        authenticator=handler.authenticate if auth else None,
        auth_required=auth,
        auth_require_tls=True,
    )


def null_to_empty(address: str) -> str:
    """aiosmtpd gives the null reverse-path `MAIL FROM:<>` as "<>"; we keep it as ""."""
    return "" if address == "<>" else address


BAD_HELO = "501 5.5.4 Syntax: HELO/EHLO needs a domain or an address literal"
_HELO = re.compile(r"[\x21-\x7e]{1,255}")  # one word of printable ASCII: no CR, LF or NUL


def valid_helo(hostname: str) -> bool:
    return _HELO.fullmatch(hostname) is not None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNDECODABLE = re.compile(r"[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


def address_problem(address: str) -> str | None:
    """What makes an envelope address unusable before any policy looks at it: bytes that are
    not UTF-8, or control characters (which would land raw in Delivered-To and in logs)."""
    if _UNDECODABLE.search(address):
        return "not UTF-8"
    if _CONTROL.search(address):
        return "a control character"
    return None


def tls_protocol(session: Session) -> str | None:
    ssl_object = (session.ssl or {}).get("ssl_object")
    if ssl_object is None:
        return None
    version = str(ssl_object.version())
    return _TLS_NAMES.get(version, version)


def tls_cipher(session: Session) -> tuple[str, int] | tuple[None, None]:
    """The session's cipher and its secret bits, for the Received field."""
    ssl_object = (session.ssl or {}).get("ssl_object")
    cipher = ssl_object.cipher() if ssl_object is not None else None
    if not cipher:
        return None, None
    name, _, bits = cipher
    return str(name), int(bits)


def rcpt_refusal(decision: TrafficDecision, listed: str = "") -> str:
    """The reply to a recipient the traffic policy refused: a user the directory does not
    list is unknown (5.1.1); anything else is refused by policy (5.7.1), with what the
    deciding statement's blocklists found (`listed`)."""
    if decision.unlisted is not None:
        return f"550 5.1.1 Recipient address rejected: user unknown (not in {decision.unlisted})"
    return f"550 5.7.1 Recipient refused by policy ({decision.decided_by}{listed})"


class IngressHandler:
    """One ingress point: its traffic policy at RCPT, SMTP AUTH when its Type is AUTH."""

    def __init__(
        self,
        *,
        ingress_id: str,
        ingress: IngressPoint,
        policy: TrafficPolicy,
        book: AddressBook,
        spool: Spool,
        logs: VendedLogs,
        clock: Clock,
        submit: Callable[[Path], None],
        smtp_password: str | None = None,
        addons: SessionAddons | None = None,
    ) -> None:
        self.ingress_id = ingress_id
        self.addons = addons or SessionAddons({})
        self.ingress = ingress
        self.policy = policy
        self.smtp_password = smtp_password
        self.book = book
        self.spool = spool
        self.logs = logs
        self.clock = clock
        self.submit = submit
        self.data_slots = asyncio.Semaphore(MESSAGES_IN_MEMORY)

    async def handle_EHLO(  # noqa: N802 -- aiosmtpd's hook name
        self,
        server: ExactSMTP,
        session: Session,
        envelope: SmtpEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if not valid_helo(hostname):  # it lands in Received: and Authentication-Results:
            session.host_name = None
            return [BAD_HELO]
        session.host_name = hostname
        if self.ingress.Type != "AUTH":  # an OPEN ingress point offers no SMTP AUTH
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_HELO(  # noqa: N802
        self, server: ExactSMTP, session: Session, envelope: SmtpEnvelope, hostname: str
    ) -> str:
        if not valid_helo(hostname):
            session.host_name = None
            return BAD_HELO
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_AUTH(  # noqa: N802
        self, server: ExactSMTP, session: Session, envelope: SmtpEnvelope, args: list[str]
    ) -> object:
        if self.ingress.Type != "AUTH":
            return "502 5.5.1 Command not implemented"
        return MISSING  # aiosmtpd's own PLAIN and LOGIN, checked by authenticate()

    def authenticate(
        self,
        server: ExactSMTP,
        session: Session,
        envelope: SmtpEnvelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        """User name: the ingress point id; password: its SmtpPassword (or secret)."""
        if not isinstance(auth_data, LoginPassword) or self.smtp_password is None:
            return AuthResult(success=False, handled=False)
        user_ok = hmac.compare_digest(auth_data.login, self.ingress_id.encode())
        password_ok = hmac.compare_digest(auth_data.password, self.smtp_password.encode())
        if user_ok and password_ok:
            return AuthResult(success=True, auth_data=self.ingress_id)
        return AuthResult(success=False, handled=False)  # IngressSMTP delays it, logs the IP

    async def handle_MAIL(  # noqa: N802
        self,
        server: ExactSMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if (problem := address_problem(address)) is not None:
            return f"501 5.1.7 Bad sender address syntax: {problem}"
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it non-empty
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(  # noqa: N802
        self,
        server: ExactSMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if (problem := address_problem(address)) is not None:
            return f"501 5.1.3 Bad recipient address syntax: {problem}"
        sender_ip = peer_ip(session)
        results = await self.addons.results(session, sender_ip)  # blocklists: once a session
        if (refusal := self.addons.refusal(results)) is not None:
            return refusal
        facts = SessionFacts(sender_ip, tls_protocol(session), results)
        refusal = self.refusal(address, facts, null_to_empty(envelope.mail_from or ""))
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    def refusal(self, address: str, facts: SessionFacts, mail_from: str) -> str | None:
        """The traffic policy's answer to one RCPT, logged: None, or the 550 reply."""
        decision = evaluate_traffic_policy(self.policy, address, facts, self.book)
        self.logs.write(
            TRAFFIC_POLICY,
            {
                "timestamp": self.clock.now().isoformat(),
                "ingress_point_id": self.ingress_id,
                "sender_ip": facts.sender_ip,
                "tls_protocol": facts.tls_protocol,
                "mail_from": mail_from,
                **decision.as_log(),
            },
        )
        if decision.verdict is TrafficVerdict.ACCEPT:
            return None
        log.info(
            "recipient refused",
            extra={
                "recipient_domain": address.rpartition("@")[2],
                "decided_by": decision.decided_by,
            },
        )
        return rcpt_refusal(decision, self._listed(facts.addons, decision.statement))

    def _listed(self, results: Mapping[str, AddonResult], statement: int | None) -> str:
        """What the blocklists the deciding statement asked found, for the refusal."""
        if statement is None:
            return ""
        asked = statement_analyzers(self.policy, statement)
        found = [r.summary for name, r in results.items() if name in asked and r.flagged]
        return f": {'; '.join(found)}" if found else ""

    def accept(self, writer: SpoolWriter, now: datetime) -> Path:
        """The fsynced spool file first (only then is 250 due), then the ingress log. The
        `accepted` event is the worker's to write (`spool.accepted_event`): no state database
        on this path."""
        path = writer.commit()
        self.log_accepted(writer, now)
        return path

    def log_accepted(self, writer: SpoolWriter, now: datetime) -> None:
        """The ingress log's record of a stored message: it must never turn the message into
        an error reply."""
        message, size = writer.envelope, writer.size
        try:
            self.logs.write(
                INGRESS,
                {
                    "timestamp": now.isoformat(),
                    "ingress_point_id": self.ingress_id,
                    "message_id": message.message_id,
                    "size": size,
                    "sender_ip": message.source_ip,
                    "mail_from": message.mail_from,
                    "helo": message.helo,
                    "tls_protocol": message.tls_protocol,
                    "recipients": message.recipients,
                    "authenticated": message.authenticated,
                },
            )
        except Exception:
            log.exception(
                "could not write the ingress log", extra={"message_id": message.message_id}
            )

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected during a session: a temporary failure, so the sender retries.
        A client that gives up during the TLS handshake is no error of ours: one line."""
        if isinstance(error, TLSSetupException):
            cause = error.__cause__ or error
            log.info("TLS handshake not completed", extra={"reason": repr(cause)})
            return "421 4.7.0 TLS handshake failed"
        log.error("SMTP session error", exc_info=error)
        return SMTP_REPLY[FailureKind.TRANSIENT]

    def start_data(self, session: Session, envelope: SmtpEnvelope) -> SpoolWriter:
        """The spool file DATA is written to as it arrives (after the 354): the message is
        received now, as Postfix dates its Received field when DATA begins."""
        now = self.clock.now()
        cipher, cipher_bits = tls_cipher(session)
        message = Envelope(
            message_id=new_message_id(now),
            mail_from=null_to_empty(envelope.mail_from or ""),
            recipients=list(envelope.rcpt_tos),
            helo=session.host_name or "",
            source_ip=peer_ip(session),
            tls_protocol=tls_protocol(session),
            tls_cipher=cipher,
            tls_cipher_bits=cipher_bits,
            authenticated=bool(session.authenticated),
            received_at=now,
            ingress_point=self.ingress_id,
        )
        return self.spool.receive(message)

    async def end_data(self, writer: SpoolWriter) -> str:
        """The whole message is in its spool file: made durable, then 250 and the workers."""
        message_id = writer.envelope.message_id
        now = self.clock.now()
        hop("data_end", message_id=message_id)
        try:
            # only the fsyncs in the spool's commit thread: each call there that leaves the GIL
            # contends for it with this loop (the buffer's write and the log record's are
            # quicker here)
            writer.flush()
            commit = self.spool.group_commit.commit(writer)
            path = await asyncio.shield(commit)
        except OSError:
            log.exception("spool write failed", extra={"message_id": message_id})
            return SMTP_REPLY[FailureKind.TRANSIENT]
        except asyncio.CancelledError:
            # the session ended during the fsyncs (the client left before its 250): a file
            # made durable goes to the workers all the same, as Postfix delivers a message
            # whose client left after the final dot, instead of waiting for the next start
            commit.add_done_callback(partial(self._committed_after_the_session, writer, now))
            raise
        hop("durable", message_id=message_id)
        self._stored(writer, path, now)
        return f"250 2.0.0 Ok: queued as {message_id}"

    def _committed_after_the_session(
        self, writer: SpoolWriter, now: datetime, commit: asyncio.Future[Path]
    ) -> None:
        if not commit.cancelled() and commit.exception() is None:
            self._stored(writer, commit.result(), now)

    def _stored(self, writer: SpoolWriter, path: Path, now: datetime) -> None:
        """A durable spool file: its ingress log record, then to the workers."""
        self.log_accepted(writer, now)
        try:
            self.submit(path)
        except Exception:  # the spool file stays and is replayed: the message is safe
            log.exception(
                "could not hand the message to the workers",
                extra={"message_id": writer.envelope.message_id},
            )
