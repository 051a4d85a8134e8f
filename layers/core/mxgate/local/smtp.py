"""aiosmtpd's SMTP server as the gateway speaks it.

`ExactSMTP` reads DATA exactly (local/smtp_data.py); the mailbox hosts use it too, so a long
line or a lone dot arrives there as it was sent. `IngressSMTP` is the ingress point's server:
enhanced status codes on aiosmtpd's own replies, the connection limits at connect, STARTTLS at
most once, and a client that keeps failing AUTH slowed down and then cut off.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import (
    DATA_SIZE_DEFAULT,
    MISSING,
    SMTP,
    AuthResult,
    Session,
    __ident__,
    _AuthMechAttr,
    login_always_fail,
)

from mxgate.delivery.smtp import PLAIN_ADDRESS
from mxgate.local.limits import AUTH_LOCKED, AuthGuard, ConnectionGate
from mxgate.local.smtp_data import TOO_BIG, DataAssembler, DataSink

log = logging.getLogger("mxgate.ingress")

# aiosmtpd's own replies, given the enhanced status codes (RFC 3463) a gateway should send.
_ENHANCED = {
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    "552 Error: Too much mail data": TOO_BIG,
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "501 Syntax: EHLO hostname": "501 5.5.4 Syntax: EHLO hostname",
    "501 Syntax: HELO hostname": "501 5.5.4 Syntax: HELO hostname",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
}
IDLE_TIMEOUT = "421 4.4.2 Idle for too long, closing the connection"
DATA_TOO_SLOW = "421 4.4.2 DATA took too long, closing the connection"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
# DATA is read in pieces of up to this many bytes (the spool's write buffer is larger)
DATA_CHUNK = 64 * 1024
_TIMER_EARLY = 0.001  # asyncio runs a timer up to its clock's resolution early (1 ns here)


def peer_ip(session: Session) -> str:
    peer: object = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


# `<local@domain>` of ASCII dot-atoms, then nothing or parameters (what aiosmtpd's parser
# gives as the rest: it takes the blanks in between)
_PLAIN_PATH = re.compile(
    rf"\s*<(?P<address>{PLAIN_ADDRESS})>"
    r"(?:[ \t]+(?P<rest>[A-Za-z0-9][^()]*))?"
)
_WALKS: dict[tuple[type, type], _ClassWalk] = {}


@dataclass(frozen=True)
class _ClassWalk:
    """What aiosmtpd's SMTP.__init__ finds by walking the session's and the handler's classes,
    found once a pair of classes: the AUTH mechanisms (mechanism, method name, aiosmtpd's own),
    the handler's hooks, its EHLO hook's form, and the SMTP commands."""

    auth_methods: tuple[tuple[str, str, bool], ...]
    hooks: tuple[str, ...]
    ehlo_hook_ver: str | None
    commands: tuple[str, ...]

    @staticmethod
    def of(server: type[SMTP], handler: type) -> _ClassWalk:
        walk = _WALKS.get((server, handler))
        if walk is None:
            walk = _WALKS[server, handler] = _ClassWalk.walk(server, handler)
        return walk

    @staticmethod
    def walk(server: type[SMTP], handler: type) -> _ClassWalk:
        auth_methods = [
            (
                getattr(method, "__auth_mechanism_name__", None)
                or name.replace("auth_", "").replace("__", "-"),
                name,
                owner is server,
            )
            for owner in (server, handler)
            for name, method in inspect.getmembers(owner)
            if name.startswith("auth_")
        ]
        hooks = tuple(
            name.replace("handle_", "") for name in dir(handler) if name.startswith("handle_")
        )
        ehlo = getattr(handler, "handle_EHLO", None)
        if ehlo is None:
            ehlo_hook_ver = None
        elif len(inspect.signature(ehlo).parameters) == 6:  # with self: aiosmtpd's "new" form
            ehlo_hook_ver = "new"
        else:
            raise RuntimeError(
                "handle_EHLO must take (server, session, envelope, hostname, responses)"
            )
        commands = tuple(
            name.replace("smtp_", "") for name in dir(server) if name.startswith("smtp_")
        )
        return _ClassWalk(tuple(auth_methods), hooks, ehlo_hook_ver, commands)


class ExactSMTP(SMTP):
    """DATA taken exactly: dot-stuffing undone only where the sender did it, lines of any
    length kept, NUL and bare CR refused, and the idle timeout counted per piece read, within
    one deadline for the whole transfer."""

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
        """aiosmtpd's SMTP.__init__ for the options the gateway uses, without its walk over
        the session's and the handler's classes (inspect.getmembers, dir, a signature), done
        once a class pair instead (`_ClassWalk`): a third of a millisecond each session.
        tests/integration/test_streaming_data.py checks it sets what aiosmtpd's own sets."""
        self._idle_deadline = 0.0  # the loop's time the session is idle for too long at
        self.data_timeout = data_timeout
        self.__ident__ = ident or __ident__
        self.loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = False
        self.command_size_limits.clear()  # aiosmtpd's: shared by its class, cleared each session
        self.hostname = hostname or socket.getfqdn()
        self.tls_context = tls_context
        self.require_starttls = tls_context and require_starttls
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._authenticator = authenticator
        self._auth_callback = None if authenticator is not None else login_always_fail
        self._auth_required = auth_required
        walk = _ClassWalk.of(type(self), type(handler))
        self._auth_methods = {
            mechanism: _AuthMechAttr(getattr(self if builtin else handler, name), builtin)
            for mechanism, name, builtin in walk.auth_methods
        }
        self._handle_hooks = {hook: getattr(handler, f"handle_{hook}") for hook in walk.hooks}
        self._ehlo_hook_ver = walk.ehlo_hook_ver
        self._smtp_methods = {
            command: getattr(self, f"smtp_{command}") for command in walk.commands
        }
        self._enforce_call_limit = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of MAIL FROM / RCPT TO and what follows it. The common `<local@domain>`
        (dot-atoms of ASCII) is matched at once; anything else (quoted local parts, comments,
        source routes, UTF-8, the null path) goes to aiosmtpd's RFC 5322 parser, and both give
        the same answer (tests/unit/test_smtp_address.py)."""
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None or self.local_part_limit:
            result: tuple[str | None, str | None] = super()._getaddr(arg)
            return result
        return plain["address"], plain["rest"] or ""

    async def push(self, status: Any) -> None:
        """aiosmtpd's push with the enhanced status codes, waiting on the writer only when
        there is something to wait for (the reply is not all sent, or the connection is going):
        its drain() is a coroutine, three calls and a debug log line a reply otherwise."""
        if isinstance(status, str):
            status = _ENHANCED.get(status, status)
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        writer = self._writer
        writer.write(status + b"\r\n")
        transport = writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            await writer.drain()  # raises when the connection is lost, as aiosmtpd's does

    def _reset_timeout(self, duration: float | None = None) -> None:
        """The session is active: idle from now, for at most `duration`. One timer a session
        that looks at the deadline when it fires, rather than a new timer every command and
        every piece of DATA (aiosmtpd's way: a heap push and a cancel each)."""
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
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(IDLE_TIMEOUT.encode() + b"\r\n")
        if transport is not None:
            transport.close()  # connection_lost tears the session down, TLS included

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 -- aiosmtpd's command name
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        sink = self.message_sink()
        try:
            data = DataAssembler(self.data_size_limit, sink)
            if not await self._read_data(data):
                sink.discard()
                return
        except BaseException:
            sink.discard()
            raise
        if data.refusal is not None:
            sink.discard()
            self.envelope = self._create_envelope()  # as after any DATA
            await self.push(data.refusal)
            return
        status = await self.message_received(sink)
        self.envelope = self._create_envelope()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self, data: DataAssembler) -> bool:
        """Read DATA through its final dot into `data`; False when the session ended first.
        DATA is read as the connection brings it, up to `DATA_CHUNK` bytes at a time; what
        the client sent after the final dot (pipelined commands) goes back to the reader."""
        reader = self._reader
        deadline = self.loop.time() + self.data_timeout
        # StreamReader stops reading the socket once it holds twice its limit (the command
        # line's 1,001 bytes): DATA of more than 2 KB would take a stop and a start, two
        # epoll_ctl calls. During DATA it may hold two chunks; commands keep their limit.
        limit, reader._limit = reader._limit, DATA_CHUNK  # type: ignore[attr-defined]
        try:
            return await self._read_data_chunks(reader, data, deadline)
        finally:
            reader._limit = limit  # type: ignore[attr-defined]

    async def _read_data_chunks(
        self, reader: asyncio.StreamReader, data: DataAssembler, deadline: float
    ) -> bool:
        while True:
            try:
                chunk = await reader.read(DATA_CHUNK)
            except asyncio.CancelledError:
                self._writer.close()
                raise
            if not chunk:  # the client left in the middle
                self._writer.close()
                return False
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                await self.push(DATA_TOO_SLOW)
                self._writer.close()
                return False
            self._reset_timeout(min(self._timeout_duration, remaining))
            end = data.feed(chunk)
            if end is not None:
                if end < len(chunk):
                    # back in front of what the reader holds, for the command loop: asyncio's
                    # StreamReader has no unread, and aiosmtpd itself reaches into its buffer
                    reader._buffer[:0] = chunk[end:]  # type: ignore[attr-defined]
                self._reset_timeout()
                return True

    def message_sink(self) -> DataSink:
        """Where DATA goes as it is read: memory, for handlers that take the message whole, as
        aiosmtpd gives it (the mailbox hosts)."""
        return MessageInMemory()

    async def message_received(self, sink: DataSink) -> Any:
        """The handler's reply to the message `sink` holds."""
        assert self.envelope is not None
        assert isinstance(sink, MessageInMemory)
        self.envelope.content = self.envelope.original_content = sink.getvalue()
        return await self._call_handler_hook("DATA")


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

            def checked(*call: Any) -> AuthResult:  # aiosmtpd's authenticator arguments
                result: AuthResult = authenticator(*call)
                if not result.success and not result.handled:
                    self._auth_failed = True  # smtp_AUTH answers it, after the delay
                    return AuthResult(success=False, handled=True)
                return result

        super().__init__(handler, authenticator=checked, **options)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self.transport is None:  # not the STARTTLS call
            peer = transport.get_extra_info("peername")
            client_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
            refusal = self.gate.admit(client_ip)
            if refusal is not None:
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self._client_ip = client_ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused or self._lost:
            return  # never started, or already torn down (aiosmtpd calls this itself after a
            # failed TLS handshake, and the transport calls it again)
        self._lost = True
        if self._client_ip is not None:
            self.gate.release(self._client_ip)
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        async with self.data_slots:  # read, spooled and answered inside its slot
            await super().smtp_DATA(arg)

    def message_sink(self) -> DataSink:
        """The spool file, written as DATA arrives: no message is ever whole in memory."""
        sink: DataSink = self.event_handler.start_data(self.session, self.envelope)
        return sink

    async def message_received(self, sink: DataSink) -> Any:
        return await self.event_handler.end_data(sink)

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        if self._tls_protocol is not None:  # RFC 3207 4.2: once per session
            await self.push("503 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
        assert self.session is not None
        client_ip = peer_ip(self.session)
        if self.guard.locked(client_ip):
            await self._cut_off()
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
                await self._cut_off()
            else:
                await self.push(AUTH_INVALID)

    async def _cut_off(self) -> None:
        await self.push(AUTH_LOCKED)
        self._writer.close()
