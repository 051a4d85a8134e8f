"""The local ASL interpreter: paths, Map, Retry with backoff, Catch, Choice; and, at load, a
clear refusal of everything else (tests/integration/test_asl_parity.py runs the same parts
against moto's interpreter)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from mxgate.errors import PermanentError, TransientError
from mxgate.records import SuspendedExecution
from mxgate.workflow.asl import (
    DefinitionError,
    ExecutionFailedError,
    Interpreter,
    read_path,
    write_path,
)
from tests.fakes import ManualClock
from tests.support import REPO


def machine(states: dict, start: str) -> dict:
    return {"StartAt": start, "States": states}


def echo(doc: Any) -> Any:
    return doc


def test_paths_read_and_write():
    document = {"a": {"b": [10, {"c": "x"}]}, "k": 1}
    assert read_path(document, "$.a.b") == [10, {"c": "x"}]
    assert read_path(document, "$.k") == 1
    assert read_path(document, "$") == document
    assert read_path({}, "$$.Map.Item.Index", {"Map": {"Item": {"Index": 3}}}) == 3
    assert write_path(document, "$.result", 5)["result"] == 5
    assert write_path(document, "$.a.new", 5)["a"] == {"b": [10, {"c": "x"}], "new": 5}
    assert "new" not in document["a"]  # the input itself is never changed
    assert write_path(document, "$", 5) == 5


def test_task_parameters_and_result_path():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "Parameters": {"x.$": "$.input", "fixed": 1, "name.$": "$$.Execution.Name"},
                "ResultPath": "$.out",
                "End": True,
            },
        },
        "T",
    )
    interpreter = Interpreter(definition, {"r": lambda doc: {**doc, "seen": True}}, ManualClock())
    assert interpreter.run({"input": 7}, name="n7") == {
        "input": 7,
        "out": {"x": 7, "fixed": 1, "name": "n7", "seen": True},
    }


def test_retry_backs_off_then_succeeds():
    calls = []

    def flaky(doc):
        calls.append(doc)
        if len(calls) < 3:
            raise TransientError("try later")
        return "done"

    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Retry": [
                    {
                        "ErrorEquals": ["TransientError"],
                        "IntervalSeconds": 2,
                        "MaxAttempts": 3,
                        "BackoffRate": 3,
                    }
                ],
            },
        },
        "T",
    )
    clock = ManualClock()
    assert Interpreter(definition, {"r": flaky}, clock).run({}) == "done"
    assert clock.slept == [2, 6]


def test_retry_exhausted_then_caught_with_the_error_document():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "Next": "Done",
                "Retry": [
                    {
                        "ErrorEquals": ["TransientError"],
                        "IntervalSeconds": 1,
                        "MaxAttempts": 2,
                        "MaxDelaySeconds": 1.5,
                    }
                ],
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}
                ],
            },
            "Caught": {"Type": "Task", "Resource": "echo", "End": True},
            "Done": {"Type": "Task", "Resource": "echo", "End": True},
        },
        "T",
    )
    clock = ManualClock()

    def always(doc):
        raise TransientError("still down")

    result = Interpreter(definition, {"r": always, "echo": echo}, clock).run({"id": 1})
    assert result["id"] == 1
    assert result["error"]["Error"] == "TransientError"
    assert json.loads(result["error"]["Cause"]) == {
        "errorType": "TransientError",
        "errorMessage": "still down",
    }
    assert clock.slept == [1, 1.5]  # 2 capped by MaxDelaySeconds


def test_permanent_error_is_not_retried():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Retry": [{"ErrorEquals": ["TransientError"], "MaxAttempts": 5}],
            },
        },
        "T",
    )
    clock = ManualClock()

    def broken(doc):
        raise PermanentError("550 no such user")

    with pytest.raises(ExecutionFailedError) as failure:
        Interpreter(definition, {"r": broken}, clock).run({})
    assert failure.value.error == "PermanentError"
    assert clock.slept == []


def test_full_jitter_stays_within_the_backoff():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Retry": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "IntervalSeconds": 4,
                        "MaxAttempts": 4,
                        "BackoffRate": 2,
                        "JitterStrategy": "FULL",
                    }
                ],
            },
        },
        "T",
    )
    clock = ManualClock()

    def failing(doc):
        raise TransientError("x")

    with pytest.raises(ExecutionFailedError):
        Interpreter(definition, {"r": failing}, clock, rng=random.Random(7)).run({})
    assert len(clock.slept) == 4
    assert all(0 <= s <= limit for s, limit in zip(clock.slept, [4, 8, 16, 32], strict=True))


def test_map_runs_each_item_with_its_selector_and_catches_per_item():
    definition = machine(
        {
            "M": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemSelector": {"value.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index"},
                "ItemProcessor": machine(
                    {
                        "Work": {
                            "Type": "Task",
                            "Resource": "r",
                            "End": True,
                            "Catch": [
                                {
                                    "ErrorEquals": ["States.ALL"],
                                    "ResultPath": "$.error",
                                    "Next": "Failed",
                                }
                            ],
                        },
                        "Failed": {
                            "Type": "Task",
                            "Resource": "failed",
                            "Parameters": {"failed.$": "$.value"},
                            "End": True,
                        },
                    },
                    "Work",
                ),
                "ResultPath": "$.results",
                "End": True,
            },
        },
        "M",
    )

    def work(doc):
        if doc["value"] == "bad":
            raise PermanentError("no")
        return {"ok": doc["value"], "at": doc["index"]}

    interpreter = Interpreter(definition, {"r": work, "failed": echo}, ManualClock())
    result = interpreter.run({"items": ["a", "bad", "c"]})
    assert result["results"] == [{"ok": "a", "at": 0}, {"failed": "bad"}, {"ok": "c", "at": 2}]


def test_a_choice_on_is_present_and_its_default():
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Default": "No",
                "Choices": [{"Variable": "$.deliveries", "IsPresent": True, "Next": "Yes"}],
            },
            "Yes": {"Type": "Task", "Resource": "yes", "End": True},
            "No": {"Type": "Task", "Resource": "no", "End": True},
        },
        "C",
    )
    interpreter = Interpreter(
        definition, {"yes": lambda doc: "big", "no": lambda doc: "small"}, ManualClock()
    )
    assert interpreter.run({"deliveries": []}) == "big"
    assert interpreter.run({"detail": {}}) == "small"


def test_a_runtime_error_is_never_retried_nor_caught():
    """A path that is not in the input is the definition's fault (States.Runtime): Step
    Functions fails the execution, whatever its Retry and Catch say."""
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "Parameters": {"x.$": "$.missing"},
                "Retry": [{"ErrorEquals": ["States.ALL"]}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Task", "Resource": "r", "End": True},
        },
        "T",
    )
    clock = ManualClock()
    with pytest.raises(ExecutionFailedError) as failure:
        Interpreter(definition, {"r": echo}, clock).run({})
    assert failure.value.error == "States.Runtime"
    assert clock.slept == []


def test_the_deployed_definition_loads():
    definition = json.loads((REPO / "statemachine" / "pipeline.asl.json").read_text())
    resources = {
        f"${{{name}}}": echo
        for name in (
            "ProcessFunctionArn",
            "QuarantineFunctionArn",
            "DeliverFunctionArn",
            "DeferFunctionArn",
            "DeadLetterFunctionArn",
        )
    }
    Interpreter(definition, resources, ManualClock())


# ----------------------------------------------------------------------------- refused at load

TASK = {"Type": "Task", "Resource": "r", "End": True}


@pytest.mark.parametrize(
    ("states", "refusal"),
    [
        ({"T": {**TASK, "InputPath": None}}, "field 'InputPath'"),
        ({"T": {**TASK, "TimeoutSeconds": 30}}, "field 'TimeoutSeconds'"),
        ({"T": {**TASK, "OutputPath": "$.x"}}, "field 'OutputPath'"),
        ({"T": {**TASK, "ResultSelector": {"a.$": "$.b"}}}, "field 'ResultSelector'"),
        (
            {"T": {**TASK, "Parameters": {"label.$": "States.Format('a, {}', $.x)"}}},
            "the intrinsic function States.Format",
        ),
        ({"T": {**TASK, "Parameters": {"x.$": "$.a[0]"}}}, "the path '$.a[0]'"),
        ({"T": {"Type": "Wait", "SecondsPath": "$.s", "End": True}}, "the state type 'Wait'"),
        ({"T": {"Type": "Pass", "End": True}}, "the state type 'Pass'"),
        ({"T": {"Type": "Parallel", "Branches": [], "End": True}}, "the state type 'Parallel'"),
        (
            {
                "T": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.n", "StringEquals": 1, "Next": "E"}],
                    "Default": "E",
                },
                "E": TASK,
            },
            "field 'StringEquals'",
        ),
        (
            {"T": {**TASK, "Retry": [{"ErrorEquals": ["States.TaskFailed"]}]}},
            "the error name 'States.TaskFailed'",
        ),
        (
            {"T": {**TASK, "Retry": [{"ErrorEquals": ["X"], "JitterStrategy": "HALF"}]}},
            "JitterStrategy 'HALF'",
        ),
        (
            {
                "M": {
                    "Type": "Map",
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                        "StartAt": "T",
                        "States": {"T": TASK},
                    },
                    "End": True,
                }
            },
            "ProcessorConfig",
        ),
    ],
    ids=[
        "InputPath",
        "TimeoutSeconds",
        "OutputPath",
        "ResultSelector",
        "intrinsic",
        "index-path",
        "Wait",
        "Pass",
        "Parallel",
        "StringEquals",
        "TaskFailed",
        "jitter",
        "distributed-map",
    ],
)
def test_what_the_interpreter_does_not_run_is_refused_at_load(states, refusal):
    start = next(iter(states))
    with pytest.raises(DefinitionError, match="which mxgate does not run") as refused:
        Interpreter(machine(states, start), {"r": echo}, ManualClock())
    assert refusal in str(refused.value)


@pytest.mark.parametrize(
    ("states", "problem"),
    [
        ({"T": {**TASK, "Resource": "elsewhere"}}, "no step runs 'elsewhere'"),
        ({"T": {"Type": "Task", "Resource": "r", "Next": "Gone"}}, "no state 'Gone' to go to"),
        (
            {"T": {**TASK, "Catch": [{"ErrorEquals": ["States.ALL", "X"], "Next": "T"}]}},
            "States.ALL must be alone",
        ),
    ],
)
def test_a_definition_that_cannot_run_is_refused_at_load(states, problem):
    with pytest.raises(DefinitionError, match=problem):
        Interpreter(machine(states, "T"), {"r": echo}, ManualClock())


# ----------------------------------------------------------------------------- waits apart


def retrying_map(max_attempts: int = 2) -> dict:
    """A Map whose items retry a transient failure, then are caught: the shape of Deliver."""
    return machine(
        {
            "Deliver": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemSelector": {"item.$": "$$.Map.Item.Value"},
                "ItemProcessor": {
                    "StartAt": "One",
                    "States": {
                        "One": {
                            "Type": "Task",
                            "Resource": "one",
                            "Retry": [
                                {
                                    "ErrorEquals": ["TransientError"],
                                    "IntervalSeconds": 2,
                                    "MaxAttempts": max_attempts,
                                }
                            ],
                            "Catch": [
                                {
                                    "ErrorEquals": ["States.ALL"],
                                    "ResultPath": "$.error",
                                    "Next": "Later",
                                }
                            ],
                            "End": True,
                        },
                        "Later": {"Type": "Task", "Resource": "later", "End": True},
                    },
                },
                "End": True,
            }
        },
        "Deliver",
    )


def test_a_retry_wait_suspends_only_its_own_map_item_and_nothing_sleeps():
    calls: list[str] = []

    def one(document: Any) -> Any:
        calls.append(document["item"])
        if document["item"] == "down":
            raise TransientError("451 try later")
        return {"delivered": document["item"]}

    clock = ManualClock()
    interpreter = Interpreter(retrying_map(), {"one": one, "later": echo}, clock)
    execution = interpreter.start({"items": ["down", "up"]}, name="m1")
    assert calls == ["down", "up"]  # the second item did not wait for the first
    assert clock.slept == []
    (wait,) = execution.waiting
    assert (wait.seconds, wait.error, wait.attempt) == (2, "TransientError", 1)
    assert wait.execution.state == "One"
    assert [(i.state, i.index) for i in wait.execution.items] == [("Deliver", 0)]
    assert execution.output[1] == {"delivered": "up"}

    # resumed from its JSON, as another process would: the count goes on from there
    suspended = type(wait.execution).model_validate_json(wait.execution.model_dump_json())
    again = interpreter.resume(suspended)
    (second,) = again.waiting
    assert (second.seconds, second.attempt) == (4, 2)  # BackoffRate 2 counted across runs
    last = interpreter.resume(second.execution)
    assert last.waiting == []
    assert last.output["error"]["Error"] == "TransientError"  # caught: the next state ran
    assert calls == ["down", "up", "down", "down"]
    assert clock.slept == []


def test_a_top_level_wait_resumes_into_the_rest_of_the_machine():
    tries = {"n": 0}

    def flaky(document: Any) -> Any:
        tries["n"] += 1
        if tries["n"] == 1:
            raise TransientError("busy")
        return {"processed": True}

    definition = machine(
        {
            "Process": {
                "Type": "Task",
                "Resource": "flaky",
                "Retry": [{"ErrorEquals": ["TransientError"], "IntervalSeconds": 1}],
                "ResultPath": "$.result",
                "Next": "Done",
            },
            "Done": {"Type": "Task", "Resource": "echo", "End": True},
        },
        "Process",
    )
    interpreter = Interpreter(definition, {"flaky": flaky, "echo": echo}, ManualClock())
    first = interpreter.start({"key": "raw/1"}, name="m2")
    assert first.output is None
    (wait,) = first.waiting
    finished = interpreter.resume(wait.execution)
    assert finished.waiting == []
    assert finished.output == {"key": "raw/1", "result": {"processed": True}}


def test_a_map_that_does_not_end_its_machine_cannot_wait_apart():
    definition = retrying_map()
    deliver = definition["States"]["Deliver"]
    del deliver["End"]
    deliver["Next"] = "After"
    definition["States"]["After"] = {"Type": "Task", "Resource": "later", "End": True}
    interpreter = Interpreter(definition, {"one": echo, "later": echo}, ManualClock())
    with pytest.raises(DefinitionError, match="does not end its machine"):
        interpreter.start({"items": []}, name="m3")
    assert interpreter.run({"items": []}) == []  # run sleeps out its waits: it may


def test_resuming_at_a_state_the_definition_no_longer_has_fails_the_execution():
    interpreter = Interpreter(retrying_map(), {"one": echo, "later": echo}, ManualClock())
    execution = interpreter.start({"items": ["x"]}, name="m4")
    assert execution.waiting == []
    gone = SuspendedExecution(name="m4", state="Removed", document={}, context={}, attempts={})
    with pytest.raises(ExecutionFailedError, match="the definition changed") as failed:
        interpreter.resume(gone)
    assert failed.value.error == "States.Runtime"
