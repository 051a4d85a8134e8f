"""The deployed stack as an operator's laptop sees it: the resource names (flags, then
environment variables, then the stack's CloudFormation outputs) and the operator's own AWS
session. `mxgate archive|quarantine|dlq|console --aws` find the stack here, and `bootstrap.aws_desk`
builds their stores; nothing is deployed for them, so no endpoint is ever public."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.failures import transient_failures
from mxgate.errors import ConfigError

if TYPE_CHECKING:
    import boto3

# name -> (the flag, the environment variable, the stack output)
NAMES: dict[str, tuple[str, str, str]] = {
    "state_table": ("--table", "MXGATE_STATE_TABLE", "StateTableName"),
    "defer_queue": ("--defer-queue", "MXGATE_DEFER_QUEUE", "DeferQueueUrl"),
    "dead_letter_queue": ("--dead-letter-queue", "MXGATE_DEAD_LETTER_QUEUE", "DeadLetterQueueUrl"),
    "raw_bucket": ("--raw-bucket", "MXGATE_RAW_BUCKET", "RawMailBucketName"),
    "archive_id": ("--archive-id", "MXGATE_ARCHIVE_ID", "ArchiveId"),
    "recipients_list": (
        "--address-list-id",
        "MXGATE_RECIPIENTS_LIST_ID",
        "RecipientsAddressListId",
    ),
}


class StackNames(BaseModel):
    model_config = ConfigDict(frozen=True)

    state_table: str | None = None
    defer_queue: str | None = None
    dead_letter_queue: str | None = None
    raw_bucket: str | None = None
    archive_id: str | None = None
    recipients_list: str | None = None
    stack: str | None = None

    def need(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            flag, variable, output = NAMES[name]
            raise ConfigError(
                f"--aws needs {flag} or {variable}"
                + (f" (the stack {self.stack} has no output {output})" if self.stack else "")
                + f", or --stack NAME (its output {output})"
            )
        return str(value)


def stack_outputs(session: boto3.session.Session, stack: str) -> dict[str, str]:
    client = session.client("cloudformation")
    with transient_failures(f"CloudFormation DescribeStacks {stack}"):
        try:
            stacks = client.describe_stacks(StackName=stack)["Stacks"]
        except client.exceptions.ClientError as error:
            raise ConfigError(f"no stack {stack!r}: {error}") from error
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def stack_names(
    session: boto3.session.Session,
    given: Mapping[str, str | None],
    stack: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StackNames:
    env = os.environ if environ is None else environ
    outputs = stack_outputs(session, stack) if stack else {}
    values: dict[str, Any] = {"stack": stack}
    for name, (_, variable, output) in NAMES.items():
        values[name] = given.get(name) or env.get(variable) or outputs.get(output)
    return StackNames.model_validate(values)


@dataclass
class OperatorAws:
    """The operator's clients for one stack, created on first use."""

    session: boto3.session.Session
    names: StackNames
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """The operator's client for a service, with the retry and timeout settings every
        client of mxgate has (clients.py)."""
        if service not in self._clients:
            self._clients[service] = LazyClient(service, session=self.session)
        return self._clients[service]

    @cached_property
    def caller(self) -> str:
        """Who is acting (the timeline says who released a message): the caller's ARN."""
        with transient_failures("STS GetCallerIdentity"):
            return str(self.client("sts").get_caller_identity()["Arn"])


def operator_aws(args: Any) -> OperatorAws:
    """From the command line's --aws options: --region, --stack and the names' flags
    (`adapters/aws/bootstrap.py` builds the desk from it)."""
    import boto3  # noqa: PLC0415 -- only with --aws

    session = boto3.session.Session(region_name=getattr(args, "region", None))
    given = {name: getattr(args, name, None) for name in NAMES}
    return OperatorAws(session, stack_names(session, given, getattr(args, "stack", None)))
