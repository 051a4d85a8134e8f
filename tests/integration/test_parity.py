"""Parity between the runtimes: statemachine/pipeline.asl.json run by moto's Step Functions
interpreter (LocalStack's, ported; each Task invokes the real Lambda handler) and by the local
interpreter (each Task calls the same step), on the same faults, attempt for attempt.

Both runs use the AWS composition root against a fresh moto account, so the only difference is
the interpreter. SES answers as it does under load (TooManyRequestsException) or for a message
it refuses (MessageRejected), per routing domain and in order; DynamoDB throttles chosen writes
(ProvisionedThroughputExceededException) past botocore's own attempts, so Process (a throttling
storm: retried, then deferred, never quarantined) and the last-resort steps (DeadLetter,
DeadLetterProcessing) must be retried by the state machine. Lambda itself fails as Step
Functions reports it (`Lambda.Unknown` for a function that timed out or ran out of memory,
`Lambda.ClientExecutionTimeoutException`): moto's interpreter names an error by the payload's
errorType only, so the fault is injected under the name Step Functions gives it. Jitter draws
its upper bound and retry waits are recorded, not slept, on both sides, so the waits compare
exactly.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.retries import standard
from moto import mock_aws
from moto.core.exceptions import ServiceException
from moto.dynamodb.exceptions import DynamodbException
from moto.dynamodb.models import DynamoDBBackend
from moto.sesv2.models import SESV2Backend
from moto.stepfunctions.parser.asl.component.common.retry import (
    jitter_strategy_decl,
    retrier_decl,
)
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from mxgate.adapters.aws import bootstrap
from mxgate.local.workflow import LocalWorkflow, load_state_machine
from mxgate.mailmanager.template import Resolver, read_samconfig_parameters, read_template
from mxgate.ports import DnsFailure
from mxgate.sandbox.stack import (
    MOTO_CONFIG,
    REGION,
    Stack,
    function_environment,
    run_execution,
    sent_messages,
)
from mxgate.workflow.asl import ExecutionFailedError
from tests.awsstack import EVENTS, SAMCONFIG, TEMPLATE, canonical_event, create_stack

WORKSPACE = ".test-google-a.com"
# the canonical message's envelope (events/process.json): bob is a Bcc recipient
ENVELOPE_RECIPIENTS = [
    "alice@nutrition.co",
    "carol@nutrition.co",
    "eve@nutrition.co",
    "bob@nutrition.co",
]
M365 = ".mail.onmicrosoft.com"


class SesAnswer(ServiceException):
    """An SES error moto serialises with the SESv2 model (defined outside moto's packages)."""


THROTTLED = SesAnswer("TooManyRequestsException", "Maximum sending rate exceeded.")
REJECTED = SesAnswer("MessageRejected", "Message rejected by the receiving host.")


@dataclass(frozen=True)
class Scenario:
    name: str
    # routing domain -> answers in order, the last one repeating: "throttle", "reject", "send",
    # or an exception that escapes the step ("dns-failure", "timeout": transient, by family)
    ses: dict[str, list[str]]
    stored: bool = True  # whether the message is in the bucket when the execution starts
    # DynamoDB writes to throttle: key prefix (of pk or sk) -> how many PutItems of such items
    # fail; 3 exhausts botocore's own attempts, so one Lambda invocation fails
    throttled: dict[str, int] = field(default_factory=dict)
    # Lambda failing before the handler runs: (step, destination) -> the error names of its
    # first invocations
    lambda_errors: dict[tuple[str, str], list[str]] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        "retried-then-delivered-and-refused",
        {WORKSPACE: ["throttle", "throttle", "send"], M365: ["reject"]},
    ),
    Scenario("retries-exhausted", {WORKSPACE: ["throttle"], M365: ["throttle", "send"]}),
    Scenario("unreadable-message-dead-lettered", {}, stored=False),
    Scenario(
        "throttled-dead-letter-retried",
        {WORKSPACE: ["send"], M365: ["reject"]},
        throttled={"dlq": 3},
    ),
    Scenario("throttled-processing-dead-letter-retried", {}, stored=False, throttled={"rcpt#": 3}),
    # A DynamoDB throttling storm while Process writes the timeline: three invocations fail
    # (each after botocore's own three attempts), the fourth gets through and delivers.
    Scenario("process-throttled-then-delivered", {}, throttled={"msg#": 9}),
    # A longer storm outlasts Process's retries: the message waits in the deferred queue,
    # never a quarantine.
    Scenario("process-throttled-then-deferred", {}, throttled={"msg#": 15}),
    Scenario(
        "lambda-timeouts-retried",
        {},
        lambda_errors={
            ("process", ""): ["Lambda.Unknown"],
            ("deliver", "workspace"): ["Lambda.ClientExecutionTimeoutException"],
            ("deliver", "m365"): ["Lambda.Unknown"],
        },
    ),
    Scenario(
        "transient-by-family-retried",
        {WORKSPACE: ["dns-failure", "timeout", "send"], M365: ["send"]},
    ),
]


def lambda_failing(scenario: Scenario) -> Any:
    """Raises, for a call of a step, the next Lambda error the scenario gives it."""
    left = {call: list(names) for call, names in scenario.lambda_errors.items()}

    def check(call: tuple[str, str]) -> None:
        if left.get(call):
            name = left[call].pop(0)
            raise type(name, (Exception,), {})(f"{call}: {name} (injected)")

    return check


@dataclass
class Observed:
    """What one run did, with timestamps and ids taken out."""

    status: str
    output: Any
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (step, destination)
    waits: list[float] = field(default_factory=list)  # seconds, sorted
    outcomes: dict[str, str] = field(default_factory=dict)
    dead_letters: list[Any] = field(default_factory=list)
    notices: list[Any] = field(default_factory=list)
    sent: list[list[str]] = field(default_factory=list)


class UpperBound(random.Random):
    """Full jitter that always draws its upper bound, so both interpreters wait alike."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Waits:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.seconds.append(float(seconds))


@pytest.fixture
def ses_faults(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """SES answers per routing domain, set by each run (moto's backend, otherwise untouched)."""
    plan: dict[str, list[str]] = {}
    send = SESV2Backend.send_raw_email

    def answering(backend: Any, source: Any, destinations: list[str], raw_data: str) -> Any:
        for suffix, answers in plan.items():
            if any(d.endswith(suffix) for d in destinations):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if answer == "throttle":
                    raise THROTTLED
                if answer == "reject":
                    raise REJECTED
                if answer == "dns-failure":
                    raise DnsFailure("no answer from the name servers")  # a TransientError
                if answer == "timeout":
                    raise TimeoutError("timed out")  # counted transient (errors.kind_of)
        return send(backend, source, destinations, raw_data)

    monkeypatch.setattr(SESV2Backend, "send_raw_email", answering)
    return plan


@pytest.fixture
def dynamodb_faults(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """PutItems to throttle, set by each run (moto's backend, otherwise untouched); botocore
    retries them without waiting, as the state machine's own waits are recorded, not slept."""
    plan: dict[str, int] = {}
    put = DynamoDBBackend.put_item

    def throttling(backend: Any, table_name: str, item_attrs: dict[str, Any], *args: Any) -> Any:
        keys = (item_attrs["pk"]["S"], item_attrs["sk"]["S"])
        for prefix, left in plan.items():
            if left and any(k.startswith(prefix) for k in keys):
                plan[prefix] = left - 1
                raise DynamodbException(
                    "ProvisionedThroughputExceededException", "Rate of requests exceeds capacity."
                )
        return put(backend, table_name, item_attrs, *args)

    monkeypatch.setattr(DynamoDBBackend, "put_item", throttling)
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    return plan


def call_of(step: str, document: Any) -> tuple[str, str]:
    delivery = document.get("delivery") if isinstance(document, dict) else None
    return step, delivery["destination"] if delivery else ""


def stage(stack: Stack, scenario: Scenario) -> None:
    if scenario.stored:
        event = canonical_event("process")
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=event["bucket"],
            Key=event["key"],
            Body=(EVENTS / "stored-message.eml").read_bytes(),
        )


def arm(scenario: Scenario, ses: dict[str, list[str]], dynamodb: dict[str, int]) -> None:
    ses.clear()
    ses.update({k: list(v) for k, v in scenario.ses.items()})
    dynamodb.clear()
    dynamodb.update(scenario.throttled)


def run_locally(
    scenario: Scenario, ses: dict[str, list[str]], dynamodb: dict[str, int]
) -> Observed:
    with mock_aws(config=MOTO_CONFIG):
        arm(scenario, ses, dynamodb)
        stack = create_stack()
        stage(stack, scenario)
        # Process has the most of the environment (its loop token key): one composition root
        # serves every step here
        with function_environment(stack.function_by_code("process").environment):
            services = bootstrap.services.__wrapped__()  # the AWS composition root
            resolver = Resolver(read_template(TEMPLATE), read_samconfig_parameters(SAMCONFIG))
            workflow = LocalWorkflow(load_state_machine(TEMPLATE, resolver), services)
            interpreter = workflow.interpreter
            waits = Waits()
            interpreter.rng, interpreter.clock = UpperBound(), waits
            interpreter.on_retry = None  # its timeline entries need the message id start() sets
            observed = Observed(status="", output=None)
            steps = dict(interpreter.tasks)

            failing = lambda_failing(scenario)

            def counted(resource: str) -> Any:
                step = workflow_step(resource)

                def task(document: Any) -> Any:
                    observed.calls[call_of(step, document)] += 1
                    failing(call_of(step, document))
                    return steps[resource](document)

                return task

            interpreter.tasks = {resource: counted(resource) for resource in steps}
            try:
                output = interpreter.run(canonical_event("process"), name="parity")
                observed.status, observed.output = "SUCCEEDED", output
            except ExecutionFailedError as failure:
                observed.status, observed.output = "FAILED", failure.error
        observed.waits = sorted(waits.seconds)
        return observe(stack, observed)


def workflow_step(resource: str) -> str:
    """`${DeliverFunctionArn}` -> deliver, as the template's DefinitionSubstitutions say."""
    resolver = Resolver(read_template(TEMPLATE), read_samconfig_parameters(SAMCONFIG))
    return load_state_machine(TEMPLATE, resolver).resource_steps[resource]


def one_iteration_at_a_time(definition: Any) -> Any:
    """The definition with each Map's MaxConcurrency 1, as the local interpreter runs Map
    iterations (one after another): attempt for attempt parity is about Retry, Catch and the
    steps, and moto's threads running iterations at once gave a delivery one attempt too many
    in one run of several (CI, 1 December)."""
    if isinstance(definition, dict):
        edited = {key: one_iteration_at_a_time(value) for key, value in definition.items()}
        if edited.get("Type") == "Map":
            edited["MaxConcurrency"] = 1
        return edited
    if isinstance(definition, list):
        return [one_iteration_at_a_time(item) for item in definition]
    return definition


def run_on_moto(
    scenario: Scenario,
    ses: dict[str, list[str]],
    dynamodb: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> Observed:
    create = StepFunctionsParserBackend.create_state_machine

    def sequential(backend: Any, name: str, definition: str, *args: Any, **kwargs: Any) -> Any:
        edited = json.dumps(one_iteration_at_a_time(json.loads(definition)))
        return create(backend, name, edited, *args, **kwargs)

    monkeypatch.setattr(StepFunctionsParserBackend, "create_state_machine", sequential)
    waits = Waits()
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=waits.sleep))
    monkeypatch.setattr(jitter_strategy_decl, "random", UpperBound())
    with mock_aws(config=MOTO_CONFIG):
        arm(scenario, ses, dynamodb)
        stack = create_stack()
        stage(stack, scenario)
        observed = Observed(status="", output=None)
        failing = lambda_failing(scenario)

        def invoke(step: str, document: Any) -> Any:
            observed.calls[call_of(step, document)] += 1
            failing(call_of(step, document))
            return stack.invoke(step, document)

        try:
            machine = stack.deploy_state_machine(invoke)
            described = run_execution(
                machine, canonical_event("process"), name=f"parity-{scenario.name}"
            )
        finally:
            stack.close()
        observed.status = described["status"]
        observed.output = (
            json.loads(described["output"]) if "output" in described else described.get("error")
        )
        observed.waits = sorted(waits.seconds)
        return observe(stack, observed)


def observe(stack: Stack, observed: Observed) -> Observed:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = stack.resource("StateTable")
    rows = dynamodb.scan(TableName=table)["Items"]
    observed.outcomes = {
        r["recipient"]["S"]: r["outcome"]["S"] for r in rows if r["sk"]["S"].startswith("rcpt#")
    }
    observed.dead_letters = sorted(
        (normalized(json.loads(r["record"]["S"])) for r in rows if r["pk"]["S"] == "dlq"),
        key=json.dumps,
    )
    messages = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=stack.resource("DeadLetterQueue"), MaxNumberOfMessages=10
    )
    observed.notices = sorted(
        (normalized(json.loads(m["Body"])) for m in messages.get("Messages", [])), key=json.dumps
    )
    routing = (WORKSPACE, M365)
    observed.sent = sorted(
        sorted(d for d in m.destinations if d.endswith(routing)) for m in sent_messages()
    )
    observed.output = normalized(observed.output)
    return observed


_DATE = re.compile(r"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
_SES_ID = re.compile(r"SES message [\w-]+")
_LAMBDA_ONLY = re.compile(r',"requestId":"[\w-]*","stackTrace":\[[^\]]*\]')
# a loop token's signature: each run's stack makes its own key (routing/loops.py)
_LOOP_SIGNATURE = re.compile(r"\b([0-9A-Z]{26})\.[a-z2-7]{16}\b")


def normalized(document: Any) -> Any:
    """Timestamps, SES message ids, loop token signatures and the Lambda-only parts of an
    error's Cause removed."""
    if isinstance(document, dict):
        return {
            key: cause_of(value) if key in {"Cause", "cause"} else normalized(value)
            for key, value in document.items()
            if key != "at"
        }
    if isinstance(document, list):
        return [normalized(item) for item in document]
    if isinstance(document, str):
        document = _LAMBDA_ONLY.sub("", document)  # a Cause quoted in a detail
        document = _LOOP_SIGNATURE.sub(r"\1.<signature>", document)
        return _SES_ID.sub("SES message <id>", _TIME.sub("<time>", _DATE.sub("<date>", document)))
    return document


def cause_of(cause: Any) -> Any:
    """Lambda's Cause adds requestId and stackTrace to what the local interpreter records."""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return normalized(cause)
    return {"errorType": parsed.get("errorType"), "errorMessage": parsed.get("errorMessage")}


EXPECTED: dict[str, dict[str, Any]] = {
    "retried-then-delivered-and-refused": {
        "calls": {
            ("process", ""): 1,
            ("deliver", "workspace"): 3,
            ("deliver", "m365"): 1,
            ("dead_letter", "m365"): 1,
        },
        "waits": [2.0, 4.0],  # IntervalSeconds 2, BackoffRate 2, full jitter's upper bound
        "outcomes": {
            "alice@nutrition.co": "relayed",
            "eve@nutrition.co": "relayed",
            "bob@nutrition.co": "relayed",  # a Bcc recipient: in the envelope only
            "carol@nutrition.co": "dead_lettered",
        },
        "dead_letter_errors": ["PermanentError"],
    },
    "retries-exhausted": {
        "calls": {
            ("process", ""): 1,
            ("deliver", "workspace"): 4,
            ("deliver", "m365"): 2,
            ("defer", "workspace"): 1,  # past the quick retries: the deferred queue
        },
        "waits": [2.0, 2.0, 4.0, 8.0],  # each Map iteration counts its own attempts
        "outcomes": {"carol@nutrition.co": "relayed"},  # the others wait, deferred
        "dead_letter_errors": [],
    },
    "unreadable-message-dead-lettered": {
        "calls": {("process", ""): 1, ("dead_letter", ""): 1},  # a permanent error: no retry
        "waits": [],
        "outcomes": dict.fromkeys(ENVELOPE_RECIPIENTS, "dead_lettered"),
        "dead_letter_errors": ["PermanentError"],
    },
    "throttled-dead-letter-retried": {
        "calls": {
            ("process", ""): 1,
            ("deliver", "workspace"): 1,
            ("deliver", "m365"): 1,
            ("dead_letter", "m365"): 2,  # throttled once, then recorded
        },
        "waits": [2.0],
        "outcomes": {
            "alice@nutrition.co": "relayed",
            "eve@nutrition.co": "relayed",
            "bob@nutrition.co": "relayed",  # a Bcc recipient: in the envelope only
            "carol@nutrition.co": "dead_lettered",
        },
        "dead_letter_errors": ["PermanentError"],
    },
    "transient-by-family-retried": {
        # a subclass of TransientError and a TimeoutError reach the state machine as
        # TransientError, which its Retry lists: retried, then delivered
        "calls": {("process", ""): 1, ("deliver", "workspace"): 3, ("deliver", "m365"): 1},
        "waits": [2.0, 4.0],
        "outcomes": dict.fromkeys(ENVELOPE_RECIPIENTS, "relayed"),
        "dead_letter_errors": [],
    },
    "throttled-processing-dead-letter-retried": {
        "calls": {("process", ""): 1, ("dead_letter", ""): 2},  # throttled once, then settled
        "waits": [2.0],
        "outcomes": dict.fromkeys(ENVELOPE_RECIPIENTS, "dead_lettered"),
        "dead_letter_errors": ["PermanentError"],
    },
    "process-throttled-then-delivered": {
        "calls": {("process", ""): 4, ("deliver", "workspace"): 1, ("deliver", "m365"): 1},
        "waits": [2.0, 4.0, 8.0],
        "outcomes": dict.fromkeys(ENVELOPE_RECIPIENTS, "relayed"),
        "dead_letter_errors": [],
    },
    "lambda-timeouts-retried": {
        "calls": {("process", ""): 2, ("deliver", "workspace"): 2, ("deliver", "m365"): 2},
        "waits": [2.0, 2.0, 2.0],
        "outcomes": dict.fromkeys(ENVELOPE_RECIPIENTS, "relayed"),
        "dead_letter_errors": [],
    },
    "process-throttled-then-deferred": {
        "calls": {("process", ""): 5, ("defer", ""): 1},
        "waits": [2.0, 4.0, 8.0, 16.0],
        "outcomes": {},  # waiting in the deferred queue: no terminal state yet
        "dead_letter_errors": [],
    },
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_both_interpreters_retry_defer_and_dead_letter_alike(
    scenario: Scenario,
    ses_faults: dict[str, list[str]],
    dynamodb_faults: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = run_locally(scenario, ses_faults, dynamodb_faults)
    moto = run_on_moto(scenario, ses_faults, dynamodb_faults, monkeypatch)

    expected = EXPECTED[scenario.name]
    assert dict(local.calls) == expected["calls"]
    assert local.waits == expected["waits"]
    assert local.outcomes == expected["outcomes"]
    assert [r["error"] for r in local.dead_letters] == expected["dead_letter_errors"]
    assert local.status == "SUCCEEDED"  # every failure ends in a terminal state, not a failure

    assert moto.calls == local.calls
    assert moto.waits == local.waits
    assert moto.status == local.status
    assert moto.output == local.output
    assert moto.outcomes == local.outcomes
    assert moto.dead_letters == local.dead_letters
    assert moto.notices == local.notices
    assert moto.sent == local.sent
