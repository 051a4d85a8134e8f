"""What may pass and what will not: the machine's own trouble (a full disk, no memory, no
descriptor left) is transient, so mail waits for it instead of being quarantined for it; the
error names an execution fails with keep their family."""

from __future__ import annotations

import errno

import pytest

from mxgate.errors import FailureKind, as_family, kind_named, kind_of
from mxgate.workflow.asl import ExecutionFailedError


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENOMEM, errno.EIO, errno.EROFS]
)
def test_the_machine_short_of_something_is_transient(code):
    error = OSError(code, "no")
    assert kind_of(error) is FailureKind.TRANSIENT
    assert type(as_family(error)).__name__ == "TransientError"  # what the Retry lists


@pytest.mark.parametrize("error", [FileNotFoundError("gone"), PermissionError("no"), ValueError()])
def test_what_a_retry_cannot_fix_stays_permanent(error):
    assert kind_of(error) is FailureKind.PERMANENT


def test_an_execution_failure_keeps_its_family():
    assert kind_of(ExecutionFailedError("TransientError", "{}")) is FailureKind.TRANSIENT
    assert kind_of(ExecutionFailedError("PolicyError", "{}")) is FailureKind.POLICY
    assert kind_of(ExecutionFailedError("States.Runtime", "{}")) is FailureKind.PERMANENT
    assert kind_named("Lambda.TooManyRequestsException") is FailureKind.TRANSIENT
