"""Which AWS failures are worth another try, in one place for the adapters.

boto3 already retries throttling a few times; what still comes out is a ClientError named by
its code, which the state machine (matching class names) would take for a permanent failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from mxgate.errors import TransientError

# Throttling and service-side failures, as the AWS services name them.
TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",  # DynamoDB
        "RequestLimitExceeded",  # DynamoDB: the account's request rate
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "SlowDown",  # S3
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceException",  # Lambda
    }
)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_transient(error: ClientError, also: frozenset[str] = frozenset()) -> bool:
    """Throttled, or the service failed (5xx): the same request may well succeed later."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = error_code(error)
    return code in TRANSIENT_CODES or code in also or status >= 500 or status == 429


@contextmanager
def transient_failures(what: str) -> Iterator[None]:
    """Raise TransientError for throttling, a 5xx answer or a lost connection; let the rest
    (a refused condition, a missing table, bad parameters) pass as they are."""
    try:
        yield
    except ClientError as error:
        if is_transient(error):
            raise TransientError(f"{what}: {error_code(error)}") from error
        raise
    except (BotoConnectionError, HTTPClientError) as error:  # no connection, a timeout
        raise TransientError(f"{what}: {error}") from error
