"""One error taxonomy, mapped in one table each to SMTP replies, CLI exit codes and the names
the state machine's Retry and Catch match, so every layer agrees on what a failure means.
An adapter turns what it knows to be temporary (throttling, a busy database, a lost connection)
into TransientError; the steps report every failure under its family's name (`as_family`), so
a subclass or a TimeoutError is retried as a TransientError is."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from enum import StrEnum
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


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


# What the machine lacks for now, not what the message is: a full disk or quota, no memory or
# file descriptors left, a busy or failing device. Mail waits for the operator to free it;
# quarantining it would punish the message for the machine's trouble (Postfix defers too).
MACHINE_TROUBLE = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOMEM,
    errno.EMFILE,
    errno.ENFILE,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.EIO,
    errno.EROFS,
}


def kind_of(error: BaseException) -> FailureKind:
    """Unknown exceptions count as permanent: retrying a bug does not fix it."""
    if isinstance(error, MxgateError):
        return error.kind
    if isinstance(error, (TimeoutError, ConnectionError)):
        return FailureKind.TRANSIENT
    if isinstance(error, OSError) and error.errno in MACHINE_TROUBLE:
        return FailureKind.TRANSIENT
    return FailureKind.PERMANENT


# The class whose name a step's failure carries to the state machine (a Lambda's errorType,
# the local interpreter's error name): its Retry lists TransientError, its Catch the others.
STATE_MACHINE_ERROR: dict[FailureKind, type[MxgateError]] = {
    FailureKind.TRANSIENT: TransientError,
    FailureKind.PERMANENT: PermanentError,
    FailureKind.POLICY: PolicyError,
}


# Lambda's own failures to run a function: the state machine's Retry lists them beside
# TransientError (statemachine/pipeline.asl.json).
LAMBDA_SERVICE_ERRORS = frozenset(
    {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    }
)


def kind_named(name: str) -> FailureKind:
    """The kind of a failure known by its state machine error name (a Catch's `Error`, an
    execution's failure)."""
    if name in LAMBDA_SERVICE_ERRORS:
        return FailureKind.TRANSIENT
    for kind, family in STATE_MACHINE_ERROR.items():
        if family.__name__ == name:
            return kind
    return FailureKind.PERMANENT


def as_family(error: Exception) -> Exception:
    """The error under its family's class, so its name is one the state machine lists; the
    original class's name stays in the message."""
    family = STATE_MACHINE_ERROR[kind_of(error)]
    if type(error) is family:
        return error
    return family(f"{type(error).__name__}: {error}")


def reported_by_family(step: Callable[_P, _R]) -> Callable[_P, _R]:
    """For a Lambda handler: what it raises reaches the state machine under its family's name."""

    @functools.wraps(step)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return step(*args, **kwargs)
        except Exception as error:
            raise as_family(error) from error

    return run
