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
from moto import mock_aws

from tests.awsstack import MOTO_CONFIG, REGION, Stack


@pytest.fixture(scope="module")
def aws() -> Iterator[Stack]:
    """template.yaml's stack in moto, for the module's AWS implementations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with mock_aws(config=MOTO_CONFIG):
            stack = Stack.create()
            yield stack
            stack.close()


def unique(prefix: str) -> str:
    """An id no other test of the module uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
