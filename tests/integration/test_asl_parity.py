"""Each part of the States Language the local interpreter runs, against moto's interpreter
(LocalStack's, ported): the same small definition, the same task code behind each Resource
(moto's Lambda invoke routed to it), the same input; both must make the same calls, wait the
same retry delays (full jitter draws its upper bound on both sides) and end alike."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto.stepfunctions.parser.asl.component.common.retry import (
    jitter_strategy_decl,
    retrier_decl,
)

from mxgate.errors import PermanentError, TransientError
from mxgate.sandbox.stack import REGION, lambda_invocations_routed, run_execution
from mxgate.workflow.asl import ExecutionFailedError, Interpreter
from tests.awsstack import moto_account
from tests.contracts.conftest import unique

Step = Callable[[Any], Any]


class UpperBound(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass
class Waits:
    seconds: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.seconds.append(float(seconds))


@dataclass
class Run:
    status: str
    output: Any  # the output document, or (error, errorType, errorMessage) of a failure
    calls: list[tuple[str, Any]]  # (task, its input), in order (a Map's items may interleave)
    waits: list[float]

    def __post_init__(self) -> None:
        self.calls = [(name, _comparable(document)) for name, document in self.calls]

    __hash__ = None  # type: ignore[assignment]  # compared, never hashed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        calls = sorted(map(json.dumps, self.calls)) == sorted(map(json.dumps, other.calls))
        return calls and (self.status, self.output, self.waits) == (
            other.status,
            other.output,
            other.waits,
        )


def cause(text: str) -> tuple[str | None, str | None]:
    """A task error's type and message; an interpreter's own error (States.*) says it in its
    own words, which are not compared."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return None, None
    return parsed.get("errorType"), parsed.get("errorMessage")


def _comparable(document: Any) -> Any:
    """A caught error's Cause, as the two write it (Lambda adds requestId and stackTrace)."""
    if isinstance(document, dict):
        return {
            k: cause(v) if k == "Cause" and isinstance(v, str) else _comparable(v)
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [_comparable(item) for item in document]
    return document


def recorded(steps: dict[str, Step], calls: list[tuple[str, Any]]) -> dict[str, Step]:
    def one(name: str, step: Step) -> Step:
        def call(document: Any) -> Any:
            calls.append((name, document))
            return step(document)

        return call

    return {name: one(name, step) for name, step in steps.items()}


def run_locally(definition: dict[str, Any], steps: dict[str, Step], document: Any) -> Run:
    calls: list[tuple[str, Any]] = []
    waits = Waits()
    tasks = {f"${{{name}}}": step for name, step in recorded(steps, calls).items()}
    interpreter = Interpreter(definition, tasks, waits, rng=UpperBound())  # type: ignore[arg-type]
    try:
        output = interpreter.run(document, name="parity")
        return Run("SUCCEEDED", _comparable(output), calls, waits.seconds)
    except ExecutionFailedError as failure:
        return Run("FAILED", (failure.error, *cause(failure.cause)), calls, waits.seconds)


@pytest.fixture(scope="module")
def moto_role() -> Iterator[str]:
    with moto_account():
        yield boto3.client("iam", region_name=REGION).create_role(
            RoleName="asl-parity", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]


def run_on_moto(
    role: str,
    definition: dict[str, Any],
    steps: dict[str, Step],
    document: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    waits = Waits()
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=waits.sleep))
    monkeypatch.setattr(jitter_strategy_decl, "random", UpperBound())
    lambdas = boto3.client("lambda", region_name=REGION)
    calls: list[tuple[str, Any]] = []
    handlers = {}
    text = json.dumps(definition)
    for name, step in recorded(steps, calls).items():
        function = unique(name)
        arn = lambdas.create_function(
            FunctionName=function,
            Runtime="python3.13",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},  # an empty zip: moto runs nothing
        )["FunctionArn"]
        handlers[function] = step
        text = text.replace(f"${{{name}}}", arn)
    machine = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name=unique("asl"), definition=text, roleArn=role
    )["stateMachineArn"]
    with lambda_invocations_routed(handlers):
        described = run_execution(machine, document, name="parity")
    if described["status"] == "SUCCEEDED":
        return Run("SUCCEEDED", _comparable(json.loads(described["output"])), calls, waits.seconds)
    failure = (described.get("error"), *cause(described.get("cause") or "{}"))
    return Run(described["status"], failure, calls, waits.seconds)


@pytest.fixture
def both(moto_role: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """Run the definition in both interpreters, each with its own steps (`steps()` makes
    them: a failing step fails anew on each side); the two runs must be equal."""

    def run(definition: dict[str, Any], steps: Callable[[], dict[str, Step]], document: Any) -> Run:
        local = run_locally(definition, steps(), document)
        on_moto = run_on_moto(moto_role, definition, steps(), document, monkeypatch)
        assert local == on_moto
        return local

    return run


def machine(states: dict[str, Any], start: str) -> dict[str, Any]:
    return {"StartAt": start, "States": states}


def echo(document: Any) -> Any:
    return {"got": document}


def failing(*errors: Exception) -> Step:
    """Raises the errors in turn, then succeeds."""
    left = list(errors)

    def step(document: Any) -> Any:
        if left:
            raise left.pop(0)
        return {"done": True}

    return step


# ----------------------------------------------------------------------------- Task


def test_parameters_take_paths_and_constants_and_result_path_places_the_result(both):
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "${Echo}",
                "Parameters": {
                    "bucket.$": "$.detail.bucket.name",
                    "fixed": 1,
                    "nested": {"key.$": "$.detail.object.key", "list": [1, "two"]},
                    "execution.$": "$$.Execution.Name",
                },
                "ResultPath": "$.out",
                "End": True,
            }
        },
        "T",
    )
    document = {"detail": {"bucket": {"name": "raw"}, "object": {"key": "raw/01M"}}, "keep": 1}
    run = both(definition, lambda: {"Echo": echo}, document)
    assert run.calls == [
        (
            "Echo",
            {
                "bucket": "raw",
                "fixed": 1,
                "nested": {"key": "raw/01M", "list": [1, "two"]},
                "execution": "parity",
            },
        )
    ]
    assert run.output["keep"] == 1
    assert run.output["out"]["got"]["bucket"] == "raw"


def test_without_parameters_or_result_path_the_input_goes_in_and_the_result_out(both):
    definition = machine({"T": {"Type": "Task", "Resource": "${Echo}", "End": True}}, "T")
    run = both(definition, lambda: {"Echo": echo}, {"a": [1, 2]})
    assert run.calls == [("Echo", {"a": [1, 2]})]
    assert run.output == {"got": {"a": [1, 2]}}


def test_a_path_that_is_not_there_fails_the_execution_even_past_a_catch_all(moto_role, monkeypatch):
    """States.Runtime: Step Functions' documentation says no catcher takes it, States.ALL
    included (concepts-error-handling). moto's interpreter catches it: a known difference,
    checked here so that the README's list of them stays true."""
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "${Echo}",
                "Parameters": {"x.$": "$.missing"},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Task", "Resource": "${Echo}", "End": True},
        },
        "T",
    )
    local = run_locally(definition, {"Echo": echo}, {"present": 1})
    assert (local.status, local.output[0], local.calls) == ("FAILED", "States.Runtime", [])
    on_moto = run_on_moto(moto_role, definition, {"Echo": echo}, {"present": 1}, monkeypatch)
    assert on_moto.status == "SUCCEEDED"  # caught: unlike Step Functions
    assert [name for name, _ in on_moto.calls] == ["Echo"]


# ----------------------------------------------------------------------------- Choice


@pytest.mark.parametrize(
    ("document", "expected"), [({"deliveries": []}, "Deliver"), ({"detail": {}}, "Process")]
)
def test_a_choice_on_is_present_or_its_default(both, document, expected):
    definition = machine(
        {
            "Start": {
                "Type": "Choice",
                "Comment": "as the pipeline starts",
                "Choices": [{"Variable": "$.deliveries", "IsPresent": True, "Next": "Deliver"}],
                "Default": "Process",
            },
            "Deliver": {"Type": "Task", "Resource": "${Deliver}", "End": True},
            "Process": {"Type": "Task", "Resource": "${Process}", "End": True},
        },
        "Start",
    )
    run = both(definition, lambda: {"Deliver": echo, "Process": echo}, document)
    assert [name for name, _ in run.calls] == [expected]


# ----------------------------------------------------------------------------- Map


def test_a_map_runs_each_item_with_its_selector_and_catches_per_item(both):
    def work(document: Any) -> Any:
        if document["delivery"] == "bad":
            raise PermanentError("refused")
        return {"delivered": document["delivery"], "index": document["index"]}

    definition = machine(
        {
            "Deliver": {
                "Type": "Map",
                "ItemsPath": "$.deliveries",
                "ItemSelector": {
                    "delivery.$": "$$.Map.Item.Value",
                    "index.$": "$$.Map.Item.Index",
                    "message.$": "$.message",
                },
                "MaxConcurrency": 10,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "DeliverOne",
                    "States": {
                        "DeliverOne": {
                            "Type": "Task",
                            "Resource": "${Work}",
                            "Catch": [
                                {
                                    "ErrorEquals": ["States.ALL"],
                                    "ResultPath": "$.error",
                                    "Next": "Dead",
                                }
                            ],
                            "End": True,
                        },
                        "Dead": {"Type": "Task", "Resource": "${Dead}", "End": True},
                    },
                },
                "ResultPath": "$.results",
                "End": True,
            }
        },
        "Deliver",
    )
    document = {"message": "01M", "deliveries": ["a", "bad", "c"]}
    run = both(definition, lambda: {"Work": work, "Dead": echo}, document)
    results = run.output["results"]
    assert results[0] == {"delivered": "a", "index": 0}
    assert results[2] == {"delivered": "c", "index": 2}
    dead = results[1]["got"]
    assert dead["delivery"] == "bad"
    assert dead["error"] == {"Error": "PermanentError", "Cause": ("PermanentError", "refused")}


# ----------------------------------------------------------------------------- Retry, Catch


def test_retry_backs_off_capped_and_jittered_then_succeeds(both):
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "${Flaky}",
                "Retry": [
                    {
                        "ErrorEquals": ["TransientError", "Lambda.ServiceException"],
                        "IntervalSeconds": 2,
                        "MaxAttempts": 3,
                        "BackoffRate": 2,
                        "MaxDelaySeconds": 3,
                        "JitterStrategy": "FULL",
                    }
                ],
                "End": True,
            }
        },
        "T",
    )
    steps = lambda: {"Flaky": failing(TransientError("busy"), TransientError("still busy"))}  # noqa: E731
    run = both(definition, steps, {})
    assert run.waits == [2.0, 3.0]  # 2, then 4 capped at 3; full jitter at its upper bound
    assert run.output == {"done": True}


def test_retries_run_out_then_the_matching_catcher_gets_the_error(both):
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "${Down}",
                "Retry": [
                    {"ErrorEquals": ["TransientError"], "IntervalSeconds": 1, "MaxAttempts": 2}
                ],
                "Catch": [
                    {"ErrorEquals": ["PolicyError"], "ResultPath": "$.policy", "Next": "Wrong"},
                    {"ErrorEquals": ["TransientError"], "ResultPath": "$.error", "Next": "Defer"},
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Wrong"},
                ],
                "End": True,
            },
            "Defer": {"Type": "Task", "Resource": "${Defer}", "End": True},
            "Wrong": {"Type": "Task", "Resource": "${Wrong}", "End": True},
        },
        "T",
    )

    def steps() -> dict[str, Step]:
        down = [TransientError("451 later")] * 3
        return {"Down": failing(*down, TransientError("never")), "Defer": echo, "Wrong": echo}

    run = both(definition, steps, {"delivery": "d1"})
    assert run.waits == [1.0, 2.0]  # BackoffRate's default: 2
    assert [name for name, _ in run.calls] == ["Down", "Down", "Down", "Defer"]
    assert run.output["got"]["error"] == {
        "Error": "TransientError",
        "Cause": ("TransientError", "451 later"),
    }


def test_an_error_no_retrier_names_is_not_retried_and_fails_without_a_catcher(both):
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "${Refuse}",
                "Retry": [{"ErrorEquals": ["TransientError"], "MaxAttempts": 5}],
                "End": True,
            }
        },
        "T",
    )
    run = both(definition, lambda: {"Refuse": failing(PermanentError("550 no such user"))}, {})
    assert run.status == "FAILED"
    assert run.output == ("PermanentError", "PermanentError", "550 no such user")
    assert run.waits == []
