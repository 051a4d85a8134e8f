"""The gateway's SMTP server: the ingress points' and the mailbox hosts'.

An `asyncio.Protocol`: command lines are parsed as they arrive and answered at once, the
replies to a pipelined group written together, with no task, stream reader or future a
session. A command runs in a task only when it has to wait (a handler hook that awaits, the
data slot, DATA's final dot, the spool's fsyncs, STARTTLS's handshake, AUTH's challenge
lines). aiosmtpd's `SMTP` did the same dialogue at twice the CPU a message
(docs/benchmarks.md, "An SMTP server of our own (issue 12, session 22)"); its replies, its
handler hooks (`handle_EHLO(server, session, envelope, hostname, responses)` and the rest) and
its `Session` / `Envelope` records are kept, so the handlers did not change.

`ExactSMTP` reads DATA exactly (local/smtp_data.py); the mailbox hosts use it, so a long line
or a lone dot arrives there as it was sent. `IngressSMTP` is the ingress point's server: the
connection limits at connect, DATA inside a data slot and straight to the spool, STARTTLS at
most once, and a client that keeps failing AUTH slowed down and then cut off.
"""

from __future__ import annotations

import asyncio
import binascii
import io
import logging
import re
import socket
import ssl
import types
from base64 import b64decode, b64encode
from collections.abc import Callable, Coroutine, Generator
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from mxgate.delivery.smtp import PLAIN_ADDRESS
from mxgate.local.limits import AUTH_LOCKED, AuthGuard, ConnectionGate
from mxgate.local.smtp_data import TOO_BIG, DataAssembler, DataSink

log = logging.getLogger("mxgate.ingress")

DATA_SIZE_DEFAULT = 2**25  # aiosmtpd's default limit, for a server built without one
IDENT = "mxgate ESMTP"
IDLE_TIMEOUT = "421 4.4.2 Idle for too long, closing the connection"
DATA_TOO_SLOW = "421 4.4.2 DATA took too long, closing the connection"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_SUCCESS = "235 2.7.0 Authentication successful"
BAD_SYNTAX = "500 5.5.2 Error: bad syntax"
LINE_TOO_LONG = "500 5.5.2 Command line too long"
NEED_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"
ALLOWED_BEFORE_STARTTLS = frozenset({"NOOP", "EHLO", "STARTTLS", "QUIT"})
BOGUS_LIMIT = 5  # unknown commands a session may send; the next one ends it
# bytes held while a command waits (a client pipelining ahead): reading pauses beyond it
INPUT_HELD = 64 * 1024
_TIMER_EARLY = 0.001  # asyncio runs a timer up to its clock's resolution early (1 ns here)
# HELP's syntax of each command, as aiosmtpd gives it (ESMTP adds the parameters)
_SYNTAX = {
    "AUTH": ("AUTH <mechanism>", ""),
    "DATA": ("DATA", ""),
    "EHLO": ("EHLO hostname", ""),
    "HELO": ("HELO hostname", ""),
    "HELP": ("HELP [command]", ""),
    "MAIL": ("MAIL FROM: <address>", " [SP <mail-parameters>]"),
    "NOOP": ("NOOP [ignored]", ""),
    "QUIT": ("QUIT", ""),
    "RCPT": ("RCPT TO: <address>", " [SP <mail-parameters>]"),
    "RSET": ("RSET", ""),
    "STARTTLS": ("STARTTLS", ""),
    "VRFY": ("VRFY <address>", ""),
}
_HOOKS = ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "AUTH")
_HOOKS_OF: dict[type, frozenset[str]] = {}
_VERBS = (*_HOOKS, "HELP", "EXPN", "STARTTLS")
_Command = Callable[[Any, str | None], Coroutine[Any, Any, None]]
_COMMANDS_OF: dict[type, dict[str, _Command]] = {}


def peer_ip(session: Session) -> str:
    peer: object = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


# `<local@domain>` of ASCII dot-atoms, then nothing or parameters (what the RFC 5322 parser
# gives as the rest: it takes the blanks in between)
_PLAIN_PATH = re.compile(
    rf"\s*<(?P<address>{PLAIN_ADDRESS})>"
    r"(?:[ \t]+(?P<rest>[A-Za-z0-9][^()]*))?"
)


def rfc5322_path(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None]:
    """The address of a MAIL FROM / RCPT TO argument and what follows it, by RFC 5322's
    grammar (quoted local parts, comments, source routes, UTF-8): (None, None) when it does
    not parse. aiosmtpd's `_getaddr`, answer for answer (tests/unit/test_smtp_address.py)."""
    if not arg:
        return "", ""
    try:
        if arg.lstrip().startswith("<"):
            angle, rest = get_angle_addr(arg)
            addr: str = angle.addr_spec
        else:
            spec, rest = get_addr_spec(arg)
            addr = spec.addr_spec
    except HeaderParseError:
        return None, None
    if local_part_limit and len(addr.rpartition("@")[0]) > local_part_limit:
        return None, None
    return addr, rest


def mail_parameters(params: list[str]) -> dict[str, str | bool] | None:
    """RFC 1869's `keyword[=value]` parameters; None when one is not of that form."""
    found: dict[str, str | bool] = {}
    for param in params:
        keyword, eq, value = param.partition("=")
        if not keyword.isalnum() or (eq and not value):
            return None
        found[keyword] = value if eq else True
    return found


def _hooks_of(handler: type) -> frozenset[str]:
    """The commands `handler` has a `handle_<command>` hook for, found once a class."""
    hooks = _HOOKS_OF.get(handler)
    if hooks is None:
        hooks = _HOOKS_OF[handler] = frozenset(c for c in _HOOKS if hasattr(handler, f"handle_{c}"))
    return hooks


def _commands_of(server: type) -> dict[str, _Command]:
    """Each command's `smtp_<VERB>` method of `server`'s class (a subclass's own where it has
    one), found once a class."""
    commands = _COMMANDS_OF.get(server)
    if commands is None:
        commands = _COMMANDS_OF[server] = {v: getattr(server, f"smtp_{v}") for v in _VERBS}
    return commands


@types.coroutine
def _the_rest(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """A coroutine started outside any task that had to wait, carried on by a task: what it
    waits on goes to the task and what the task sends (or throws) back goes to it, as
    `yield from` would do after its first step (Python 3.12's eager tasks, by hand)."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as error:  # noqa: BLE001 -- the task's cancellation, passed on
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration:
                return


async def _carry_on(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    await _the_rest(coroutine, waiting_on)


class ExactSMTP(asyncio.Protocol):
    """One SMTP session. DATA taken exactly: dot-stuffing undone only where the sender did
    it, lines of any length kept, NUL and bare CR refused, and the idle timeout counted per
    piece read, within one deadline for the whole transfer."""

    line_length_limit = 1001  # RFC 5321 4.5.3.1.6: 1,000 octets and a transparency dot
    command_size_limit = 512  # RFC 5321 4.5.3.1.4
    local_part_limit = 0  # 0: any length (RFC 5321's 64 is not enforced, as aiosmtpd)
    AuthLoginUsernameChallenge = "User Name\x00"
    AuthLoginPasswordChallenge = "Password\x00"

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str | None = None,
        ident: str | None = None,
        data_size_limit: int | None = DATA_SIZE_DEFAULT,
        enable_SMTPUTF8: bool = False,  # noqa: N803 -- aiosmtpd's name (and defaults)
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        timeout: float = 300.0,
        data_timeout: float = 600.0,
        authenticator: Any = None,
        auth_required: bool = False,
        auth_require_tls: bool = True,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.event_handler = handler
        self.hostname = hostname or socket.getfqdn()
        self.ident = ident or IDENT
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._encoding = "utf-8" if enable_SMTPUTF8 else "ascii"
        self.tls_context = tls_context
        self.require_starttls = bool(tls_context and require_starttls)
        self.data_timeout = data_timeout
        self._timeout_duration = timeout
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0  # the loop's time the session is idle for too long at
        self._authenticator = authenticator
        self._auth_required = auth_required
        self._auth_require_tls = auth_require_tls
        self._hooks = _hooks_of(type(handler))
        self.session = Session(self.loop)
        self.envelope = Envelope()
        self.transport: asyncio.Transport | None = None
        self._tls_active = False
        self._handshaking = False  # STARTTLS's handshake under way
        self._closing = False  # QUIT, a timeout, a refusal or the client: no more replies
        self._buffer = bytearray()  # bytes received, not yet taken as a command line
        self._overlong = False  # the line being received is too long: dropped to its end
        self._mail_limit = self.command_size_limit  # MAIL's, with EHLO's parameters
        self._bogus = BOGUS_LIMIT
        self._work: asyncio.Task[None] | None = None  # the command that had to wait
        self._line: asyncio.Future[bytes] | None = None  # a command waiting for a line
        self._replies: list[bytes] | None = None  # replies held, to go in one write
        self._data: DataAssembler | None = None  # DATA being received into it
        self._data_end: asyncio.Future[None] | None = None
        self._data_deadline = 0.0
        self._paused: set[str] = set()  # why reading is paused: "input" held, "output" unread

    # the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.session.peer = transport.get_extra_info("peername")
        self._reset_timeout()
        self.push(f"220 {self.hostname} {self.ident}")

    def connection_lost(self, error: Exception | None) -> None:
        self._closing = True
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if self._work is not None:
            self._work.cancel()  # DATA's sink is discarded; a spool commit under way goes on

    def eof_received(self) -> bool:
        """The client closed its side: what it was in the middle of is dropped, as when it
        goes away (False: the transport closes)."""
        if self._work is not None:
            self._work.cancel()
        return False

    def pause_writing(self) -> None:
        """The client does not read its replies: read no more of its commands either."""
        self._pause("output")

    def resume_writing(self) -> None:
        self._resume("output")

    def _pause(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def close(self) -> None:
        """End the session: what was answered is still sent, then the connection closes."""
        self._flush()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # input

    def data_received(self, data: bytes) -> None:
        if self._data is not None:  # DATA: straight to the message
            self._feed_data(data)
            return
        self._buffer += data
        if self._work is None or self._line is not None:
            self._process()
        elif len(self._buffer) > INPUT_HELD:
            self._pause("input")  # until the command that waits is done

    def _process(self) -> None:
        """Answer the command lines received, in order, until one has to wait; the replies
        of the lot go in one write."""
        self._replies = []
        try:
            while not self._closing and self._data is None:
                if self._work is not None and self._line is None:
                    break
                line = self._take_line()
                if line is None:
                    break
                if self._line is not None:  # the line a waiting command asked for
                    waiter, self._line = self._line, None
                    if line is _OVERLONG:
                        waiter.set_exception(ValueError("line too long"))
                    else:
                        waiter.set_result(line)
                    break
                if line is _OVERLONG:
                    self.push(LINE_TOO_LONG)
                    continue
                self._run(self._answer(line))
        finally:
            self._flush()
            self._replies = None  # from now on (a task's replies), each is written at once
        if self._work is None and len(self._buffer) <= INPUT_HELD:
            self._resume("input")

    def _take_line(self) -> bytes | None:
        """The next whole line received (to its LF, as aiosmtpd reads), or None. A line
        longer than `line_length_limit` is dropped as it comes and given as `_OVERLONG`."""
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > self.line_length_limit:
                self._overlong = True
                buffer.clear()
            return None
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        if self._overlong or end > self.line_length_limit:
            self._overlong = False
            return _OVERLONG
        return line

    def _run(self, answer: Coroutine[Any, Any, None]) -> None:
        """Run a command's coroutine now; when it has to wait, a task carries it on, and
        the lines after it wait for it."""
        try:
            waiting_on = answer.send(None)
        except StopIteration:
            return
        self._flush()  # what was answered before it goes now
        self._work = work = self.loop.create_task(_carry_on(answer, waiting_on))
        work.add_done_callback(self._done_waiting)

    def _done_waiting(self, work: asyncio.Task[None]) -> None:
        if work is not self._work:
            return
        self._work = None
        if not work.cancelled() and work.exception() is not None:
            log.error("SMTP session failed", exc_info=work.exception())
            self.close()
            return
        if not self._closing and not work.cancelled():
            self._process()

    async def _next_line(self) -> bytes:
        """The client's next line, for a command that reads more than its own (AUTH)."""
        line = self._take_line()
        if line is _OVERLONG:
            raise ValueError("line too long")
        if line is not None:
            return line
        self._line = self.loop.create_future()
        return await self._line

    # output

    def push(self, status: str | bytes) -> None:
        """One reply: held with the others of a pipelined group, or written now."""
        reply = (status.encode(self._encoding) if isinstance(status, str) else status) + b"\r\n"
        if self._replies is not None:
            self._replies.append(reply)
        elif self.transport is not None and not self._closing:
            self.transport.write(reply)

    def _flush(self) -> None:
        """Write the replies held so far (if any are)."""
        if self._replies:
            if self.transport is not None and not self._closing:
                self.transport.write(b"".join(self._replies))
            self._replies = []

    # timeouts

    def _reset_timeout(self, duration: float | None = None) -> None:
        """The session is active: idle from now, for at most `duration`. One timer a session
        that looks at the deadline when it fires, rather than a new timer every command and
        every piece of DATA (a heap push and a cancel each)."""
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        timer = self._timeout_handle
        if timer is None or timer.cancelled() or timer.when() > self._idle_deadline:
            if timer is not None:
                timer.cancel()
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() + _TIMER_EARLY >= self._idle_deadline:
            self._timeout_cb()
        else:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)

    def _timeout_cb(self) -> None:
        """Idle for too long: say so (RFC 5321 4.2.2: 421 before closing), then close."""
        transport = self.transport
        # in a TLS handshake a plain-text reply would be noise in it: the connection just goes
        if transport is not None and not transport.is_closing() and not self._handshaking:
            transport.write(IDLE_TIMEOUT.encode() + b"\r\n")
        self._closing = True
        if transport is not None:
            transport.close()  # connection_lost tears the session down, TLS included

    # commands

    async def _answer(self, line: bytes) -> None:
        """One command line, answered (aiosmtpd's reading of it, reply for reply)."""
        try:
            await self._command(line.rstrip(b"\r\n"))
        except Exception as error:  # noqa: BLE001 -- the handler's to answer (a 4xx)
            try:
                status = await self.handle_exception(error)
            except Exception as inner:
                log.exception("exception in handle_exception")
                status = f"451 4.3.0 Error: ({type(inner).__name__}) {inner}"
            if isinstance(error, TLSSetupException):
                self._tls_failed(error)
            else:
                self.push(status)

    async def _command(self, line: bytes) -> None:
        if not line:
            self.push(BAD_SYNTAX)
            return
        verb_bytes, _, arg_bytes = line.partition(b" ")
        try:
            verb = verb_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            self.push(BAD_SYNTAX)
            return
        arg: str | None = None
        if arg_bytes:
            arg_bytes = arg_bytes.strip()
            if self.enable_SMTPUTF8:  # bytes that are not UTF-8 survive as surrogates
                arg = arg_bytes.decode("utf-8", "surrogateescape")
            else:
                try:
                    arg = arg_bytes.decode("ascii")
                except UnicodeDecodeError:
                    self.push("500 5.5.2 Error: strict ASCII mode")
                    return
        extended = self.session.extended_smtp
        limit = self._mail_limit if extended and verb == "MAIL" else self.command_size_limit
        if len(line) > limit:
            self.push(LINE_TOO_LONG)
            return
        if self.require_starttls and not self._tls_active and verb not in ALLOWED_BEFORE_STARTTLS:
            self.push(NEED_STARTTLS)  # RFC 3207 4
            return
        command = _commands_of(type(self)).get(verb)
        if command is None:
            self._bogus -= 1
            if self._bogus < 1:
                self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                self.close()
                return
            self.push(f'500 5.5.1 Error: command "{verb}" not recognized')
            return
        self._reset_timeout()
        await command(self, arg)

    async def _hook(self, command: str, *args: Any) -> Any:
        """The handler's `handle_<command>` answer, or MISSING when it has none."""
        if command not in self._hooks:
            return MISSING
        hook = getattr(self.event_handler, f"handle_{command}")
        return await hook(self, self.session, self.envelope, *args)

    async def handle_exception(self, error: Exception) -> str:
        hook = getattr(self.event_handler, "handle_exception", None)
        if hook is not None:
            status: str = await hook(error)
            return status
        log.error("SMTP session exception", exc_info=error)
        return f"451 4.3.0 Error: ({type(error).__name__}) {error}"

    def _helo_needed(self, helo: str = "HELO") -> bool:
        if not self.session.host_name:
            self.push(f"503 5.5.1 Error: send {helo} first")
            return True
        return False

    def _auth_needed(self) -> bool:
        if self._auth_required and not self.session.authenticated:
            self.push("530 5.7.0 Authentication required")
            return True
        return False

    async def smtp_HELO(self, hostname: str | None) -> None:  # noqa: N802 -- the command's name
        if not hostname:
            self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self.envelope = Envelope()
        self.session.extended_smtp = False
        status = await self._hook("HELO", hostname)
        if status is MISSING:
            self.session.host_name = hostname
            status = f"250 {self.hostname}"
        self.push(status)

    async def smtp_EHLO(self, hostname: str | None) -> None:  # noqa: N802
        if not hostname:
            self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        responses = [f"250-{self.hostname}"]
        self.envelope = Envelope()
        self.session.extended_smtp = True
        self._mail_limit = self.command_size_limit
        if self.data_size_limit:
            responses.append(f"250-SIZE {self.data_size_limit}")
            self._mail_limit += 26  # " SIZE=" and its digits
        responses.append("250-8BITMIME")
        responses.append("250-ENHANCEDSTATUSCODES")
        if self.enable_SMTPUTF8:
            responses.append("250-SMTPUTF8")
            self._mail_limit += 10
        if self.tls_context and not self._tls_active:
            responses.append("250-STARTTLS")
        if not self._auth_require_tls or self._tls_active:
            responses.append("250-AUTH LOGIN PLAIN")
        responses.append("250 HELP")
        if "EHLO" in self._hooks:
            responses = await self._hook("EHLO", hostname, responses)
        else:
            self.session.host_name = hostname
        for response in responses:
            self.push(response)

    async def smtp_NOOP(self, arg: str | None) -> None:  # noqa: N802
        status = await self._hook("NOOP", arg)
        self.push("250 2.0.0 OK" if status is MISSING else status)

    async def smtp_QUIT(self, arg: str | None) -> None:  # noqa: N802
        if arg:
            self.push("501 5.5.4 Syntax: QUIT")
            return
        status = await self._hook("QUIT")
        self.push("221 2.0.0 Bye" if status is MISSING else status)
        self.close()

    async def smtp_RSET(self, arg: str | None) -> None:  # noqa: N802
        if arg:
            self.push("501 5.5.4 Syntax: RSET")
            return
        self.envelope = Envelope()
        status = await self._hook("RSET")
        self.push("250 2.0.0 OK" if status is MISSING else status)

    async def smtp_HELP(self, arg: str | None) -> None:  # noqa: N802
        if self._auth_needed():
            return
        offered = {verb: syntax for verb, syntax in _SYNTAX.items() if self._offers(verb)}
        code = "250 2.0.0"
        if arg:
            syntax = offered.get(arg.upper())
            if syntax is not None:
                text, extended = syntax
                parameters = extended if self.session.extended_smtp else ""
                self.push(f"250 2.0.0 Syntax: {text}{parameters}")
                return
            code = "501 5.5.4"
        self.push(f"{code} Supported commands: {' '.join(sorted(offered))}")

    def _offers(self, verb: str) -> bool:
        return verb != "STARTTLS" or bool(self.tls_context)

    async def smtp_VRFY(self, arg: str | None) -> None:  # noqa: N802
        if self._auth_needed():
            return
        if not arg:
            self.push("501 5.5.4 Syntax: VRFY <address>")
            return
        address, _ = self._getaddr(arg)
        if address is None:
            self.push(f"502 5.5.1 Could not VRFY {arg}")
            return
        status = await self._hook("VRFY", address)
        self.push(
            "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
            if status is MISSING
            else status
        )

    async def smtp_EXPN(self, arg: str | None) -> None:  # noqa: N802
        self.push("502 5.5.1 EXPN not implemented")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of MAIL FROM / RCPT TO and what follows it. The common `<local@domain>`
        (dot-atoms of ASCII) is matched at once; anything else (quoted local parts, comments,
        source routes, UTF-8, the null path) goes to the RFC 5322 parser, and both give the
        same answer (tests/unit/test_smtp_address.py)."""
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None or self.local_part_limit:
            return rfc5322_path(arg, self.local_part_limit)
        return plain["address"], plain["rest"] or ""

    def _path_argument(self, keyword: str, arg: str | None) -> tuple[str | None, list[str]]:
        """The address and the parameters of `MAIL FROM:` / `RCPT TO:`: (None, []) when a
        reply has been given instead. Parameters come only after EHLO."""
        syntax = f"501 5.5.4 Syntax: {_SYNTAX['MAIL' if keyword == 'FROM:' else 'RCPT'][0]}"
        if self.session.extended_smtp:
            syntax += " [SP <mail-parameters>]"
        if arg is None or arg[: len(keyword)].upper() != keyword:
            self.push(syntax)
            return None, []
        address, rest = self._getaddr(arg[len(keyword) :].strip())
        if address is None:
            self.push("553 5.1.3 Error: malformed address")
            return None, []
        if not address or (not self.session.extended_smtp and rest):
            self.push(syntax)
            return None, []
        return address, (rest or "").upper().split()

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        if self._helo_needed() or self._auth_needed():
            return
        address, options = self._path_argument("FROM:", arg)
        if address is None:
            return
        if self.envelope.mail_from:
            self.push("503 5.5.1 Error: nested MAIL command")
            return
        params = mail_parameters(options)
        if params is None:
            self.push("501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]")
            return
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            self.push("501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        smtputf8 = params.pop("SMTPUTF8", False)
        if not isinstance(smtputf8, bool):
            self.push("501 5.5.4 Error: SMTPUTF8 takes no arguments")
            return
        if smtputf8 and not self.enable_SMTPUTF8:
            self.push("501 5.5.4 Error: SMTPUTF8 disabled")
            return
        self.envelope.smtp_utf8 = smtputf8
        size = params.pop("SIZE", None)
        if size:
            if isinstance(size, bool) or not size.isdigit():
                self.push("501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]")
                return
            if self.data_size_limit and int(size) > self.data_size_limit:
                self.push(TOO_BIG)
                return
        if params:
            self.push("555 5.5.4 MAIL FROM parameters not recognized or not implemented")
            return
        status = await self._hook("MAIL", address, options)
        if status is MISSING:
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(options)
            status = "250 2.1.0 OK"
        self.push(status)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        if self._helo_needed() or self._auth_needed():
            return
        if not self.envelope.mail_from:
            self.push("503 5.5.1 Error: need MAIL command")
            return
        address, options = self._path_argument("TO:", arg)
        if address is None:
            return
        if mail_parameters(options) is None:
            self.push("501 5.5.4 Syntax: RCPT TO: <address> [SP <mail-parameters>]")
            return
        if options:  # none is known
            self.push("555 5.5.4 RCPT TO parameters not recognized or not implemented")
            return
        status = await self._hook("RCPT", address, options)
        if status is MISSING:
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(options)
            status = "250 2.1.5 OK"
        self.push(status)

    async def smtp_DATA(self, arg: str | None) -> None:  # noqa: N802
        if self._helo_needed() or self._auth_needed():
            return
        if not self.envelope.rcpt_tos:
            self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            self.push("501 5.5.4 Syntax: DATA")
            return
        self.push("354 End data with <CR><LF>.<CR><LF>")
        sink = self.message_sink()
        try:
            data = DataAssembler(self.data_size_limit, sink)
            await self._read_data(data)
        except BaseException:
            sink.discard()  # the client left, or took too long
            raise
        if data.refusal is not None:
            sink.discard()
            self.envelope = Envelope()  # as after any DATA
            self.push(data.refusal)
            return
        status = await self.message_received(sink)
        self.envelope = Envelope()
        self.push("250 2.0.0 OK" if status is MISSING else status)

    def _read_data(self, data: DataAssembler) -> asyncio.Future[None]:
        """DATA from now on goes to `data` as the connection brings it, through its final
        dot; what the client sent after the dot (pipelined commands) stays for the commands.
        Done when the dot has come."""
        self._data = data
        self._data_deadline = self.loop.time() + self.data_timeout
        self._data_end = end = self.loop.create_future()
        if self._buffer:
            held = bytes(self._buffer)
            self._buffer.clear()
            self._feed_data(held)
        return end

    def _feed_data(self, chunk: bytes) -> None:
        assert self._data is not None
        assert self._data_end is not None
        remaining = self._data_deadline - self.loop.time()
        if remaining <= 0:
            self.push(DATA_TOO_SLOW)
            self.close()
            return
        self._reset_timeout(min(self._timeout_duration, remaining))
        end = self._data.feed(chunk)
        if end is not None:
            self._data = None
            self._buffer += chunk[end:]
            self._reset_timeout()
            self._data_end.set_result(None)

    def message_sink(self) -> DataSink:
        """Where DATA goes as it is read: memory, for handlers that take the message whole
        (the mailbox hosts)."""
        return MessageInMemory()

    async def message_received(self, sink: DataSink) -> Any:
        """The handler's reply to the message `sink` holds."""
        assert isinstance(sink, MessageInMemory)
        self.envelope.content = self.envelope.original_content = sink.getvalue()
        return await self._hook("DATA")

    async def smtp_STARTTLS(self, arg: str | None) -> None:  # noqa: N802
        if arg:
            self.push("501 5.5.4 Syntax: STARTTLS")
            return
        if not self.tls_context:
            self.push("454 4.7.0 TLS not available")
            return
        if self._tls_active:  # RFC 3207 4.2: once per session
            self.push("503 5.5.1 TLS is already active")
            return
        self.push("220 2.0.0 Ready to start TLS")
        self._flush()
        self._buffer.clear()  # RFC 3207 4.2: nothing sent before the handshake counts
        assert self.transport is not None
        self._handshaking = True
        try:
            transport = await self.loop.start_tls(
                self.transport, self, self.tls_context, server_side=True
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException from error
        finally:
            self._handshaking = False
        if transport is None:  # the connection went during the handshake
            raise TLSSetupException
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._tls_active = True
        peer = self.session.peer
        self.session = Session(self.loop)  # RFC 3207 4.2: the client starts again
        self.session.peer = peer
        self.session.ssl = {
            name: transport.get_extra_info(name)
            for name in ("ssl_object", "peercert", "cipher", "compression", "sslcontext")
        }
        self.envelope = Envelope()

    def _tls_failed(self, error: Exception) -> None:
        """The handshake did not complete: the connection is dropped, without a reply (there
        is no channel to send one on)."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()
        self.connection_lost(error)  # the TLS layer never tells us: it had not started

    async def smtp_AUTH(self, arg: str | None) -> None:  # noqa: N802
        if self._helo_needed("EHLO"):
            return
        if not self.session.extended_smtp:
            self.push("500 5.5.1 Error: command 'AUTH' not recognized")
            return
        if self._auth_require_tls and not self._tls_active:
            self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        if self.session.authenticated:
            self.push("503 5.5.1 Already authenticated")
            return
        if not arg:
            self.push("501 5.5.4 Not enough value")
            return
        args = arg.split()
        if len(args) > 2:
            self.push("501 5.5.4 Too many values")
            return
        if args[0] not in ("LOGIN", "PLAIN"):
            self.push("504 5.5.4 Unrecognized authentication type")
            return
        status = await self._hook("AUTH", args)
        if status is MISSING:
            read = self._auth_plain if args[0] == "PLAIN" else self._auth_login
            result = await read(args)
            if result.success:
                self.session.authenticated = True
                self.session.auth_data = result.auth_data
                status = result.message or AUTH_SUCCESS
            elif result.handled:
                status = None
            else:
                status = result.message or AUTH_INVALID
        if status is not None:
            self.push(status)

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True) -> Any:
        """A 334 challenge and the client's answer, decoded; MISSING when it gave up (`*`)
        or sent what is not base64 (both answered)."""
        text = challenge.encode() if isinstance(challenge, str) else challenge
        self.push(b"334 " + (b64encode(text) if encode_to_b64 else text))
        blob = (await self._next_line()).strip()
        if blob == b"*":  # RFC 4954 4
            self.push("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return b64decode(blob, validate=True)
        except binascii.Error:
            self.push("501 5.5.2 Can't decode base64")
            return MISSING

    async def _auth_plain(self, args: list[str]) -> AuthResult:
        if len(args) == 1:
            answer = await self.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False)
        else:
            try:
                answer = b64decode(args[1].encode(), validate=True)
            except Exception:  # noqa: BLE001 -- not base64, or not ASCII
                self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            _, login, password = answer.split(b"\x00")  # RFC 4616: authzid NUL authcid NUL passwd
        except ValueError:
            self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return self._authenticate("PLAIN", LoginPassword(login, password))

    async def _auth_login(self, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except Exception:  # noqa: BLE001
                self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False)
        return self._authenticate("LOGIN", LoginPassword(login, password))

    def _authenticate(self, mechanism: str, credentials: LoginPassword) -> AuthResult:
        if self._authenticator is None:  # nobody to check with: every attempt fails
            return AuthResult(success=False, handled=False)
        result: AuthResult = self._authenticator(
            self, self.session, self.envelope, mechanism, credentials
        )
        return result


_OVERLONG = b"<a line too long>\n"  # compared by identity: no line received is this object


class MessageInMemory(io.BytesIO):
    """A message read into memory."""

    def discard(self) -> None:
        self.close()


class IngressSMTP(ExactSMTP):
    """One session of an ingress point. Its DATA is read inside one of `data_slots`, shared by
    the ingress point's sessions: a session beyond them waits before its 354 (it is not
    refused), so memory grows with the message size, not with the number of sessions."""

    def __init__(
        self,
        handler: Any,
        *,
        gate: ConnectionGate,
        guard: AuthGuard,
        data_slots: asyncio.Semaphore,
        authenticator: Any = None,
        **options: Any,
    ) -> None:
        self.gate = gate
        self.guard = guard
        self.data_slots = data_slots
        self._client_ip: str | None = None  # set while the gate counts this session
        self._refused = False
        self._lost = False
        self._auth_failed = False
        checked = None
        if authenticator is not None:

            def checked(*call: Any) -> AuthResult:  # (server, session, envelope, mechanism, data)
                result: AuthResult = authenticator(*call)
                if not result.success and not result.handled:
                    self._auth_failed = True  # smtp_AUTH answers it, after the delay
                    return AuthResult(success=False, handled=True)
                return result

        super().__init__(handler, authenticator=checked, **options)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
        refusal = self.gate.admit(client_ip)
        if refusal is not None:
            self._refused = self._closing = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal.encode() + b"\r\n")
            transport.close()
            return
        self._client_ip = client_ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused or self._lost:
            return  # never started, or already torn down (after a failed TLS handshake)
        self._lost = True
        if self._client_ip is not None:
            self.gate.release(self._client_ip)
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str | None) -> None:  # noqa: N802
        async with self.data_slots:  # read, spooled and answered inside its slot
            await super().smtp_DATA(arg)

    def message_sink(self) -> DataSink:
        """The spool file, written as DATA arrives: no message is ever whole in memory."""
        sink: DataSink = self.event_handler.start_data(self.session, self.envelope)
        return sink

    async def message_received(self, sink: DataSink) -> Any:
        return await self.event_handler.end_data(sink)

    async def smtp_AUTH(self, arg: str | None) -> None:  # noqa: N802
        client_ip = peer_ip(self.session)
        if self.guard.locked(client_ip):
            self._cut_off()
            return
        self._auth_failed = False
        await super().smtp_AUTH(arg)
        if self.session.authenticated:
            self.guard.succeeded(client_ip)
        elif self._auth_failed:
            self._auth_failed = False
            delay, cut_off = self.guard.failed(client_ip)
            await asyncio.sleep(delay)  # a guesser waits; nobody else does
            if cut_off:
                self._cut_off()
            else:
                self.push(AUTH_INVALID)

    def _cut_off(self) -> None:
        self.push(AUTH_LOCKED)
        self.close()
