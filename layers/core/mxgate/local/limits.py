"""What the local ingress allows one client and everyone at once, like a real MX.

Connections over a limit are answered `421 4.7.0` and closed; a client that keeps failing
SMTP AUTH waits longer after each failure and is then cut off for a while (its IP in the log).
The limits live in config/local.yaml `smtp.limits` (docs/configuration.md). On AWS, Mail
Manager's ingress point applies its own.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mxgate.ports import Clock

log = logging.getLogger("mxgate.ingress")

Seconds = Annotated[float, Field(gt=0)]


class SmtpLimits(BaseModel):
    """config/local.yaml `smtp.limits`: every field has a default a small MX can run with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: Annotated[int, Field(ge=1)] = Field(
        default=500, description="SMTP sessions at once, every ingress point together"
    )
    max_connections_per_client: Annotated[int, Field(ge=1)] = Field(
        default=50,
        description="sessions at once from one IP address (Postfix "
        "smtpd_client_connection_count_limit: 50)",
    )
    listen_backlog: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=1024,
        description="connections the kernel holds before the gateway accepts them "
        "(capped by net.core.somaxconn)",
    )
    idle_timeout: Seconds = Field(
        default=300,
        description="seconds the gateway waits for the next command, and for each line of "
        "DATA (RFC 5321 4.5.3.2: 5 minutes)",
    )
    data_timeout: Seconds = Field(
        default=600, description="seconds one DATA transfer may take in all"
    )
    auth_failures: Annotated[int, Field(ge=1)] = Field(
        default=3, description="failed AUTH attempts from one IP before it is cut off"
    )
    auth_failure_delay: Annotated[float, Field(ge=0)] = Field(
        default=1.0,
        description="seconds before a failed AUTH is answered; doubles with each failure",
    )
    auth_lockout: Seconds = Field(
        default=900, description="seconds a cut-off IP stays refused after its last failure"
    )


TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_FROM_CLIENT = "421 4.7.0 Too many connections from your address, try again later"
AUTH_LOCKED = "421 4.7.0 Too many failed authentication attempts, try again later"
_REFUSALS_LOGGED_EVERY = 10.0  # seconds: a burst is logged as counts, not line by line


def _seconds(clock: Clock) -> float:
    return clock.now().timestamp()


class ConnectionGate:
    """Counts the open sessions, in all and per client IP, and says who may have another."""

    def __init__(self, limits: SmtpLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.open = 0
        self.by_client: Counter[str] = Counter()
        self._refused = 0
        self._refusals_logged = float("-inf")

    def admit(self, client_ip: str) -> str | None:
        """None: the session may start (call `release` when it ends); else the 421 reply."""
        if self.open >= self.limits.max_connections:
            return self._refuse(client_ip, TOO_MANY_CONNECTIONS)
        if self.by_client[client_ip] >= self.limits.max_connections_per_client:
            return self._refuse(client_ip, TOO_MANY_FROM_CLIENT)
        self.open += 1
        self.by_client[client_ip] += 1
        return None

    def release(self, client_ip: str) -> None:
        self.open -= 1
        self.by_client[client_ip] -= 1
        if self.by_client[client_ip] <= 0:
            del self.by_client[client_ip]

    def _refuse(self, client_ip: str, reply: str) -> str:
        self._refused += 1
        now = _seconds(self.clock)
        if now - self._refusals_logged >= _REFUSALS_LOGGED_EVERY:
            log.warning(
                "connections refused over the limit",
                extra={
                    "client_ip": client_ip,
                    "refused": self._refused,
                    "open": self.open,
                    "from_client": self.by_client[client_ip],
                    "max_connections": self.limits.max_connections,
                    "max_connections_per_client": self.limits.max_connections_per_client,
                },
            )
            self._refusals_logged = now
            self._refused = 0
        return reply


@dataclass
class _Failures:
    count: int
    last: float  # seconds since the epoch, by the clock


class AuthGuard:
    """Failed SMTP AUTH attempts per client IP, across its sessions."""

    def __init__(self, limits: SmtpLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self._failures: dict[str, _Failures] = {}

    def _current(self, client_ip: str) -> _Failures | None:
        found = self._failures.get(client_ip)
        if found is not None and _seconds(self.clock) - found.last >= self.limits.auth_lockout:
            del self._failures[client_ip]  # forgiven: the lockout has passed
            return None
        return found

    def locked(self, client_ip: str) -> bool:
        found = self._current(client_ip)
        return found is not None and found.count >= self.limits.auth_failures

    def failed(self, client_ip: str) -> tuple[float, bool]:
        """Record a failure: (seconds to wait before answering, whether it is now cut off)."""
        self._prune()
        found = self._current(client_ip)
        count = 1 if found is None else found.count + 1
        self._failures[client_ip] = _Failures(count, _seconds(self.clock))
        cut_off = count >= self.limits.auth_failures
        log.warning(
            "authentication failed",
            extra={"client_ip": client_ip, "failures": count, "cut_off": cut_off},
        )
        return self.limits.auth_failure_delay * 2 ** (count - 1), cut_off

    def succeeded(self, client_ip: str) -> None:
        self._failures.pop(client_ip, None)

    def _prune(self) -> None:
        """Forget clients whose lockout has passed, so the table never grows without end."""
        if len(self._failures) < 4096:
            return
        horizon = _seconds(self.clock) - self.limits.auth_lockout
        for ip in [ip for ip, f in self._failures.items() if f.last < horizon]:
            del self._failures[ip]


@dataclass(frozen=True)
class Defences:
    """The limits and the counters every ingress session of one gateway shares."""

    limits: SmtpLimits
    gate: ConnectionGate
    guard: AuthGuard

    @classmethod
    def counting(cls, limits: SmtpLimits, clock: Clock) -> Defences:
        return cls(limits, ConnectionGate(limits, clock), AuthGuard(limits, clock))


def raise_open_file_limit(limits: SmtpLimits) -> int:
    """Room for every session the limits allow (each is a file descriptor), plus the gateway's
    own files: the soft RLIMIT_NOFILE is raised toward the hard one. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * limits.max_connections + 1024  # refused sessions hold one briefly too
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
        if soft < wanted:
            log.warning(
                "the open-file limit is below what the connection limits need",
                extra={"open_files": soft, "wanted": wanted},
            )
    return soft
