"""Which AWS failures the adapters report as TransientError (retried, then deferred) and which
pass as they are (a Catch dead-letters them)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from mxgate.adapters.aws.failures import is_transient, transient_failures
from mxgate.errors import TransientError


def answer(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutItem",
    )


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("ProvisionedThroughputExceededException", 400, True),
        ("RequestLimitExceeded", 400, True),
        ("ThrottlingException", 400, True),
        ("SlowDown", 503, True),
        ("SomethingNew", 503, True),  # any 5xx
        ("SomethingNew", 429, True),
        ("ConditionalCheckFailedException", 400, False),
        ("ResourceNotFoundException", 400, False),
        ("AccessDeniedException", 403, False),
    ],
)
def test_throttling_and_service_failures_are_transient(code, status, transient):
    assert is_transient(answer(code, status)) is transient
    if transient:
        with (
            pytest.raises(TransientError, match=f"DynamoDB settle: {code}"),
            transient_failures("DynamoDB settle"),
        ):
            raise answer(code, status)
    else:
        with pytest.raises(ClientError), transient_failures("DynamoDB settle"):
            raise answer(code, status)


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
)
def test_a_lost_connection_is_transient(error):
    with (
        pytest.raises(TransientError, match=r"dynamodb\.us-east-1"),
        transient_failures("DynamoDB"),
    ):
        raise error


def test_a_service_specific_code_can_be_added():
    quota = answer("LimitExceededException", 400)
    assert not is_transient(quota)
    assert is_transient(quota, also=frozenset({"LimitExceededException"}))
