"""One error taxonomy, mapped in one table each to SMTP replies and CLI exit codes, so every
layer agrees on what a failure means. The state machine's Retry and Catch match the class names
(a Lambda's errorType, and the local interpreter's error name): an adapter turns what it knows
to be temporary (throttling, a busy database, a lost connection) into TransientError."""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # try again later: the next attempt may succeed
    PERMANENT = "permanent"  # the same attempt will fail again
    POLICY = "policy"  # refused on purpose by configuration or a rule


class MxgateError(Exception):
    """Base of every error mxgate raises on purpose."""

    kind: FailureKind = FailureKind.PERMANENT


class TransientError(MxgateError):
    kind = FailureKind.TRANSIENT


class PermanentError(MxgateError):
    kind = FailureKind.PERMANENT


class PolicyError(MxgateError):
    kind = FailureKind.POLICY


class ConfigError(PermanentError):
    """Configuration that cannot be used; the message names the file and the place."""


# What an SMTP server of ours answers when a failure of this kind happens during a session.
SMTP_REPLY: dict[FailureKind, str] = {
    FailureKind.TRANSIENT: "451 4.3.0 Temporary failure, try again later",
    FailureKind.PERMANENT: "554 5.3.0 Transaction failed",
    FailureKind.POLICY: "550 5.7.1 Refused by policy",
}

# Exit codes of the `mxgate` command (sysexits.h spirit: 75 = EX_TEMPFAIL).
EXIT_CODE: dict[FailureKind, int] = {
    FailureKind.TRANSIENT: 75,
    FailureKind.PERMANENT: 1,
    FailureKind.POLICY: 3,
}
EXIT_USAGE = 2


def kind_of(error: BaseException) -> FailureKind:
    """Unknown exceptions count as permanent: retrying a bug does not fix it."""
    if isinstance(error, MxgateError):
        return error.kind
    if isinstance(error, (TimeoutError, ConnectionError)):
        return FailureKind.TRANSIENT
    return FailureKind.PERMANENT
