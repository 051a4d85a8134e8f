"""SMTP transport: one reused connection per destination, results per recipient.

For submission (port 587) the target asks for STARTTLS, then AUTH; a server that does not
offer STARTTLS when it is required is a failure, never a fallback to plain text. 4xx replies
are transient and 5xx permanent, per recipient; a broken connection is transient for
everyone. The envelope sender is passed through unchanged.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from mxgate.errors import ConfigError
from mxgate.message.raw import RawMessage
from mxgate.ports import SendResult
from mxgate.routing.routes import Destination

_BARE_LF = re.compile(rb"(?<!\r)\n")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# local@domain of ASCII dot-atoms: the usual address, which both SMTP paths take as it is (the
# ingress's MAIL/RCPT fast path; smtplib.quoteaddr, which parses every address with
# email.utils.parseaddr, gives the same for these)
PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(PLAIN_ADDRESS)


def quoted_path(address: str) -> str:
    """An envelope address as MAIL FROM and RCPT TO take it: `<address>`."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def to_crlf(raw: bytes) -> bytes:
    """SMTP requires CRLF; DKIM canonicalises to CRLF too, so this never breaks a signature.
    A message with no bare LF (the usual one) comes back as it is, found so by two counts (the
    regular expression alone takes tens of milliseconds a megabyte)."""
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return _BARE_LF.sub(b"\r\n", raw)


LONG_LINE = 1 << 20  # bytes of a line without LF held back before they are sent anyway


def data_pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The message as DATA carries it, a piece per chunk read: CRLF line ends (`to_crlf`),
    each line's leading dot doubled (RFC 5321 4.5.2 transparency), then the end-of-data line.
    Each piece ends after a LF, so no line's start, and no CR before its LF, is split between
    two pieces (a line longer than LONG_LINE goes in parts, a trailing CR kept for its LF)."""
    carry = b""
    line_start = True  # the next piece starts a line
    ends_line = False  # what was sent ends with a line break
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) < LONG_LINE:
                carry = data
                continue
            cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        piece, carry = data[:cut], data[cut:]
        yield _stuffed(to_crlf(piece), line_start)
        line_start = ends_line = piece.endswith(b"\n")
    if carry:
        yield _stuffed(to_crlf(carry), line_start)
        ends_line = False
    yield b".\r\n" if ends_line else b"\r\n.\r\n"


def _stuffed(piece: bytes, line_start: bool) -> bytes:
    stuffed = piece.replace(b"\n.", b"\n..") if b"\n." in piece else piece
    return b"." + stuffed if line_start and stuffed.startswith(b".") else stuffed


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    starttls: bool = False
    verify_tls: bool = True
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    helo: str = "mxgate.local"
    ca_file: str | None = None  # certificates to trust instead of the system's
    source_address: str | None = None  # the local address to connect from (smtp_bind_address)


class SmtpTransport:
    requires_verified_sender = False  # the envelope and From go through as they are

    def __init__(self, target: SmtpTarget, max_message_bytes: int | None = None) -> None:
        self.target = target
        self.max_message_bytes = max_message_bytes
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def _connect(self) -> smtplib.SMTP:
        target = self.target
        client = smtplib.SMTP(
            target.host,
            target.port,
            local_hostname=target.helo,
            timeout=target.timeout,
            source_address=(target.source_address, 0) if target.source_address else None,
        )
        try:
            # a large message and its final dot go as two writes: without this, Nagle's
            # algorithm holds the dot until the host acknowledges the message (a delayed ACK)
            if client.sock is not None:
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.ehlo()
            if target.starttls:
                if not client.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError(
                        f"{target.host}:{target.port} does not offer STARTTLS, which is required"
                    )
                context = ssl.create_default_context(cafile=target.ca_file)
                if not target.verify_tls:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                client.starttls(context=context)
                client.ehlo()
            if target.username is not None and target.password is not None:
                client.login(target.username, target.password)
        except BaseException:
            client.close()  # a half-open session is never kept or leaked
            raise
        return client

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.quit()
            except (smtplib.SMTPException, OSError):
                self._client.close()
            self._client = None

    def send(
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: RawMessage,
        tags: Mapping[str, str] | None = None,
    ) -> Mapping[str, SendResult]:
        with self._lock:
            for attempt in (1, 2):  # a reused connection may have been closed by the server
                try:
                    if self._client is None:
                        self._client = self._connect()
                    return self._send(self._client, envelope_sender, recipients, raw)
                except smtplib.SMTPServerDisconnected as error:
                    self._client = None
                    if attempt == 2:
                        return everyone_failed(
                            recipients, transient=True, detail=f"disconnected: {error}"
                        )
                except (OSError, smtplib.SMTPException) as error:
                    self._drop()
                    return everyone_failed(
                        recipients, transient=_is_transient(error), detail=_describe(error)
                    )
        return everyone_failed(recipients, transient=True, detail="unreachable")  # pragma: no cover

    def _send(
        self, client: smtplib.SMTP, sender: str, recipients: Sequence[str], raw: RawMessage
    ) -> Mapping[str, SendResult]:
        options = []
        if client.has_extn("8bitmime") and not raw.isascii():
            options.append("BODY=8BITMIME")
        if client.has_extn("smtputf8") and not all(a.isascii() for a in (sender, *recipients)):
            options.append("SMTPUTF8")
        if client.has_extn("pipelining"):
            return self._pipelined(client, sender, options, recipients, raw)
        code, reply = client.mail(sender, options)
        if code != 250:
            client.rset()
            return everyone_failed(recipients, transient=code < 500, detail=_reply(code, reply))
        results: dict[str, SendResult] = {}
        accepted = []
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code in (250, 251):
                accepted.append(recipient)
            else:
                results[recipient] = SendResult(
                    ok=False, transient=code < 500, detail=_reply(code, reply)
                )
        if not accepted:
            client.rset()
            return results
        code, reply = client.docmd("DATA")
        if code == 354:
            code, reply = _message_data(client, raw)
        else:
            client.rset()
        for recipient in accepted:
            results[recipient] = SendResult(
                ok=code == 250, transient=code < 500, detail=_reply(code, reply)
            )
        return results

    @staticmethod
    def _pipelined(
        client: smtplib.SMTP,
        sender: str,
        options: list[str],
        recipients: Sequence[str],
        raw: RawMessage,
    ) -> Mapping[str, SendResult]:
        """MAIL, every RCPT and DATA in one write, then their replies in order (RFC 2920):
        one round trip instead of two and one per recipient."""
        commands = [f"MAIL FROM:{quoted_path(sender)} {' '.join(options)}".rstrip()]
        commands += [f"RCPT TO:{quoted_path(r)}" for r in recipients]
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        client.send(("\r\n".join([*commands, "DATA"]) + "\r\n").encode(encoding))
        mail = client.getreply()
        results: dict[str, SendResult] = {}
        accepted = []
        for recipient in recipients:
            code, reply = client.getreply()
            if mail[0] != 250:  # each RCPT after a refused MAIL fails with it
                code, reply = mail
            if code in (250, 251):
                accepted.append(recipient)
            else:
                results[recipient] = SendResult(
                    ok=False, transient=code < 500, detail=_reply(code, reply)
                )
        code, reply = client.getreply()  # to DATA
        if code == 354:
            if accepted:
                code, reply = _message_data(client, raw)
            else:  # no recipient, yet the server waits for the message: end it, empty
                client.send(b".\r\n")
                code, reply = client.getreply()
        else:  # the transaction failed before its message: start the next one afresh
            client.rset()
        for recipient in accepted:
            results[recipient] = SendResult(
                ok=code == 250, transient=code < 500, detail=_reply(code, reply)
            )
        return results


WRITE_SIZE = 64 * 1024  # bytes of DATA gathered into one write


def _message_data(client: smtplib.SMTP, raw: RawMessage) -> tuple[int, bytes]:
    """After the 354: the message read and sent in chunks, never whole; the host's reply.
    Pieces are gathered up to WRITE_SIZE a write: a small message goes with its final dot in
    one `sendall`, where each piece was a write of its own (on loopback each costs the
    receiving side's TCP work too, in this process's system time). A piece of that size goes
    alone, uncopied (the join of one piece is the piece)."""
    gathered: list[bytes] = []
    size = 0
    for piece in data_pieces(raw.chunks()):
        if gathered and size + len(piece) > WRITE_SIZE:
            client.send(b"".join(gathered))
            gathered, size = [], 0
        gathered.append(piece)
        size += len(piece)
    client.send(b"".join(gathered))  # data_pieces ends with the final dot: never empty
    return client.getreply()


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"


def everyone_failed(
    recipients: Sequence[str], *, transient: bool, detail: str
) -> dict[str, SendResult]:
    return {r: SendResult(ok=False, transient=transient, detail=detail) for r in recipients}


def _is_transient(error: BaseException) -> bool:
    code = getattr(error, "smtp_code", None)
    return not (isinstance(code, int) and 500 <= code < 600)


def _describe(error: BaseException) -> str:
    code = getattr(error, "smtp_code", None)
    text = getattr(error, "smtp_error", None)
    if isinstance(code, int):
        reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return f"{code} {reply}"
    return f"{type(error).__name__}: {error}"


def submission_transport(
    destination: Destination, environ: Mapping[str, str], helo: str
) -> SmtpTransport:
    """The transport of a routes destination with `transport: smtp` (the same on both runtimes)."""
    if destination.host is None:
        raise ConfigError("an smtp destination needs `host`")
    password = None
    if destination.password_env is not None:
        password = environ.get(destination.password_env)
        if password is None:
            raise ConfigError(f"the SMTP password variable {destination.password_env} is not set")
    return SmtpTransport(
        SmtpTarget(
            destination.host,
            destination.port,
            starttls=destination.starttls,
            verify_tls=destination.verify_tls,
            username=destination.username,
            password=password,
            helo=helo,
        )
    )


class MisconfiguredTransport:
    """Stands in for a destination whose configuration cannot be used (a missing password):
    its deliveries are deferred with the reason, as an MTA defers on a configuration error
    (4.3.5), so fixing the configuration within the queue lifetime loses nothing."""

    requires_verified_sender = False
    max_message_bytes: int | None = None

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def send(
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: RawMessage,
        tags: Mapping[str, str] | None = None,
    ) -> Mapping[str, SendResult]:
        return everyone_failed(recipients, transient=True, detail=f"4.3.5 {self.reason}")


def submission_or_deferral(
    destination: Destination, environ: Mapping[str, str], helo: str
) -> SmtpTransport | MisconfiguredTransport:
    try:
        return submission_transport(destination, environ, helo)
    except ConfigError as error:
        return MisconfiguredTransport(str(error))
