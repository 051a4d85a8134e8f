"""The port contract suites: each port's promises, checked against every implementation of it
(the in-memory fakes, the SQLite and file adapters, the AWS adapters on moto), so the two
runtimes cannot drift apart unnoticed.

One moto account per module (creating the template's stack takes about a second); tests keep
apart by unique ids, never by a fresh account.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mxgate.sandbox.stack import Stack
from tests.awsstack import create_stack, moto_account


@pytest.fixture(scope="module")
def aws() -> Iterator[Stack]:
    """template.yaml's stack in moto, for the module's AWS implementations."""
    with moto_account():
        stack = create_stack()
        yield stack
        stack.close()


def unique(prefix: str) -> str:
    """An id no other test of the module uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
