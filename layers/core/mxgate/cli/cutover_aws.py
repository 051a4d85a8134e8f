"""`mxgate check --aws`: the deployed stack's checks, and the test message followed there."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import TYPE_CHECKING

from mxgate.cli.cutover import Run, settled_states, wait_settled
from mxgate.cutover.aws import ingress_point_check, ses_identity_check, stack_check
from mxgate.cutover.model import Check, ChecklistItem, Status
from mxgate.cutover.smtp import terminal_check

if TYPE_CHECKING:
    from mxgate.adapters.aws.stack import DeployedStack


def connect(args: argparse.Namespace) -> DeployedStack:
    from mxgate.adapters.aws.operator import operator_aws  # noqa: PLC0415 -- boto3 on demand
    from mxgate.adapters.aws.stack import DeployedStack  # noqa: PLC0415

    return DeployedStack(operator_aws(args))


def aws_checks(run: Run, deployed: DeployedStack) -> None:
    from mxgate.adapters.aws.stack import AwsError, failure  # noqa: PLC0415 -- boto3 on demand

    try:
        run.outputs = deployed.outputs()
        run.checks.append(stack_check(deployed.name, run.outputs))
    except AwsError as error:
        run.checks.append(stack_check(deployed.name, {}, failure(error)))
        return
    try:
        identity = deployed.email_identity(run.domain)
        run.checks.append(ses_identity_check(run.domain, identity, run.app_domains, run.resolver))
    except AwsError as error:
        run.checks.append(
            ses_identity_check(run.domain, None, run.app_domains, run.resolver, failure(error))
        )
    point_id = run.outputs.get("IngressPointId")
    if point_id is None:
        run.checks.append(
            ingress_point_check(None, run.mx_target, "the stack has no IngressPointId output")
        )
        return
    try:
        run.checks.append(ingress_point_check(deployed.ingress_point(point_id), run.mx_target))
    except AwsError as error:
        run.checks.append(ingress_point_check(None, run.mx_target, failure(error)))


def follow_aws(run: Run, deployed: DeployedStack, recipient: str, sent_at: datetime) -> None:
    """The test message on AWS: found by its token in the raw bucket, then its recipients'
    terminal states in the state table. Its delivered headers are in the mailbox."""
    names = deployed.operator.names
    bucket, table = names.raw_bucket, names.state_table
    if not (bucket and table):
        run.checks.append(
            Check(
                name="delivery.stored",
                subject=deployed.name,
                status=Status.FAIL,
                summary="the test message cannot be followed: no raw bucket or state table",
                fix="give --stack NAME (its outputs name them), or --raw-bucket and --table",
            )
        )
        return
    deadline = time.monotonic() + run.args.wait
    message_id = None
    while message_id is None and time.monotonic() < deadline:
        message_id = deployed.find_stored(bucket, "raw/", run.token.encode(), sent_at)
        if message_id is None:
            run.progress(f"looking for {run.token} in s3://{bucket}/raw/")
            time.sleep(2)
    if message_id is None:
        run.checks.append(
            Check(
                name="delivery.stored",
                subject=f"s3://{bucket}/raw/",
                status=Status.FAIL,
                summary=f"the test message ({run.token}) was not stored in {run.args.wait:g}s",
                fix="look at the rule set's logs (APPLICATION_LOGS of the rule set)",
            )
        )
        return
    run.message_id = message_id
    settled = wait_settled(
        run, message_id, [recipient], lambda: settled_states(deployed.states(table, message_id))
    )
    run.checks.append(terminal_check(message_id, [recipient], settled))


def mailbox_reading(run: Run, recipient: str) -> ChecklistItem:
    """On AWS the delivered copy is in the provider's mailbox, where only its owner reads it."""
    return ChecklistItem(
        provider="the test mailbox",
        where=recipient,
        setting=f"the message 'mxgate check {run.token}': show original",
        value=f"Return-Path <{run.args.mail_from}> and an Authentication-Results field of the "
        "gateway",
    )
